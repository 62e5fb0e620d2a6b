package redisctl

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ParseUsedMemory reads used_memory (bytes) from an INFO memory answer.
func ParseUsedMemory(info string) (int64, error) {
	for _, line := range strings.Split(info, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("used_memory %q is not a byte count", v)
		}
		return n, nil
	}
	return 0, fmt.Errorf("INFO memory has no used_memory field")
}

// UsedMemory dials the member at addr and returns its used_memory: the
// bytes its data takes as redis counts them against maxmemory (what a
// smaller plan must still hold).
func UsedMemory(ctx context.Context, addr, password string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(addr, password))
	defer c.Close()
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("info memory on %s: %w", addr, err)
	}
	n, err := ParseUsedMemory(info)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", addr, err)
	}
	return n, nil
}

// CheckMaxmemory returns nil once the member at addr runs with maxmemory
// planMB (CONFIG GET maxmemory), else an error saying what it runs with.
// A plan change checks each redis member with it: the agents resize them
// live.
func CheckMaxmemory(ctx context.Context, addr, password string, planMB int) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(addr, password))
	defer c.Close()
	got, err := c.ConfigGet(ctx, "maxmemory").Result()
	if err != nil {
		return fmt.Errorf("CONFIG GET maxmemory on %s: %w", addr, err)
	}
	want := strconv.Itoa(planMB) + "mb"
	if v := got["maxmemory"]; !sameValue("maxmemory", v, want) {
		return fmt.Errorf("%s runs with maxmemory %s, want %s", addr, humanMemory(v), want)
	}
	return nil
}

// humanMemory shows a maxmemory answer (bytes) in MB when it is a whole
// number of them.
func humanMemory(v string) string {
	n, err := parseMemory(v)
	if err != nil || n == 0 || n%(1<<20) != 0 {
		return strconv.Quote(v)
	}
	return strconv.FormatInt(n>>20, 10) + "mb"
}
