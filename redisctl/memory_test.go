package redisctl

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestParseUsedMemory(t *testing.T) {
	for _, tc := range []struct {
		name, info string
		want       int64
		err        string
	}{
		{"redis 7", "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:9000000\r\n", 1 << 20, ""},
		{"first field only", "used_memory_rss:5\r\nused_memory:7\r\n", 7, ""},
		{"missing", "# Memory\r\nused_memory_rss:5\r\n", 0, "no used_memory field"},
		{"garbage", "used_memory:lots\r\n", 0, `used_memory "lots" is not a byte count`},
		{"negative", "used_memory:-1\r\n", 0, "is not a byte count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseUsedMemory(tc.info)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("= %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestRealMemory(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t, ip1, "")
	c := redis.NewClient(MemberOptions(addr, testPassword))
	defer c.Close()
	before, err := UsedMemory(ctx, addr, testPassword)
	if err != nil || before <= 0 {
		t.Fatalf("UsedMemory = %d, %v", before, err)
	}
	if err := c.Set(ctx, "big", strings.Repeat("x", 4<<20), 0).Err(); err != nil {
		t.Fatal(err)
	}
	after, err := UsedMemory(ctx, addr, testPassword)
	if err != nil || after-before < 4<<20 {
		t.Fatalf("UsedMemory after a 4 MB value = %d (before %d), %v", after, before, err)
	}

	if err := c.ConfigSet(ctx, "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	if err := CheckMaxmemory(ctx, addr, testPassword, 64); err != nil {
		t.Errorf("CheckMaxmemory 64 on a 64mb server: %v", err)
	}
	err = CheckMaxmemory(ctx, addr, testPassword, 128)
	if err == nil || !strings.Contains(err.Error(), "runs with maxmemory 64mb, want 128mb") {
		t.Errorf("CheckMaxmemory 128 on a 64mb server: %v", err)
	}
	if err := CheckMaxmemory(ctx, deadAddr(t, ip2), testPassword, 64); err == nil {
		t.Error("CheckMaxmemory of a closed port: no error")
	}
	if _, err := UsedMemory(ctx, addr, "wrong-password"); err == nil || strings.Contains(err.Error(), "wrong-password") {
		t.Errorf("UsedMemory with a wrong password: %v (must fail without naming it)", err)
	}
}
