package redisctl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/internal/testutil"
)

func TestParseMasterView(t *testing.T) {
	mv, err := parseMasterView(map[string]string{"ip": "127.0.0.12", "port": "20000", "config-epoch": "3", "flags": "master"})
	if err != nil || mv.Addr != "127.0.0.12:20000" || mv.Epoch != 3 || len(mv.Flags) != 1 {
		t.Fatalf("%+v %v", mv, err)
	}
	for _, bad := range []map[string]string{{"ip": "", "port": "1"}, {"ip": "127.0.0.1", "port": "x"}, {"ip": "127.0.0.1", "port": "1", "config-epoch": "z"}} {
		if _, err := parseMasterView(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if f, err := fieldMap([]any{"ip", "1.2.3.4", "port", "5"}); err != nil || f["ip"] != "1.2.3.4" {
		t.Fatalf("%v %v", f, err)
	}
	if _, err := fieldMap([]any{"ip"}); err == nil {
		t.Fatal("odd list accepted")
	}
}

func TestResolveLatest(t *testing.T) {
	tests := []struct {
		name      string
		views     map[string]MasterView
		want      string
		votes     int
		errSubstr string
	}{
		{"all agree", map[string]MasterView{"s1": {Addr: "a", Epoch: 1}, "s2": {Addr: "a", Epoch: 1}, "s3": {Addr: "a", Epoch: 1}}, "a", 3, ""},
		{"a failover: the newer epoch wins over a sentinel that missed it", map[string]MasterView{
			"s1": {Addr: "b", Epoch: 1}, "s2": {Addr: "b", Epoch: 1}, "new": {Addr: "a", Epoch: 0}}, "b", 2, ""},
		{"one sentinel that saw it is enough to know the newest decision", map[string]MasterView{
			"s1": {Addr: "b", Epoch: 2}, "s2": {Addr: "a", Epoch: 1}}, "b", 1, ""},
		{"two masters in one epoch", map[string]MasterView{"s1": {Addr: "a", Epoch: 2}, "s2": {Addr: "b", Epoch: 2}}, "", 0, "two masters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ResolveLatest(tc.views)
			if tc.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("err %v", err)
				}
				return
			}
			if err != nil || l.Addr != tc.want || l.Votes != tc.votes || l.Answered != len(tc.views) {
				t.Fatalf("%+v %v", l, err)
			}
		})
	}
}

// TestRealLatestAndRemonitor: after a failover, a sentinel started on the
// dead old primary (it can never meet the others) still names it at an
// older epoch; AskLatest names the new primary, and Remonitor brings the
// isolated sentinel onto it, with the password and settings.
func TestRealLatestAndRemonitor(t *testing.T) {
	b := startBusiness(t, "latest")
	ctx := context.Background()
	if _, err := Failover(ctx, b.sentinels, testPassword, b.name); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		l, err := AskLatest(ctx, b.sentinels, testPassword, b.name)
		if err != nil {
			return err
		}
		if l.Addr != b.replica || l.Votes != 3 || l.Epoch < 1 {
			return fmt.Errorf("latest %+v", l)
		}
		return nil
	})
	// An isolated sentinel: watches an address where nobody listens.
	lone, _ := startSentinel(t, ip3, b.name, deadAddr(t, ip1))
	l, err := AskLatest(ctx, append([]string{lone}, b.sentinels...), testPassword, b.name)
	if err != nil || l.Addr != b.replica || l.Votes != 3 || l.Answered != 4 {
		t.Fatalf("with an isolated sentinel: %+v, %v", l, err)
	}
	set := SentinelSettings{Quorum: 2, DownAfter: 30 * time.Second, FailoverTimeout: 10 * time.Second, ParallelSyncs: 1}
	if err := Remonitor(ctx, lone, b.name, b.replica, testPassword, set); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		mv, err := MasterState(ctx, lone, testPassword, b.name)
		if err != nil {
			return err
		}
		if mv.Addr != b.replica {
			return fmt.Errorf("names %s", mv.Addr)
		}
		k, err := Known(ctx, lone, testPassword, b.name)
		if err != nil {
			return err
		}
		// It met the replica (the old primary) and the other sentinels
		// through the live primary: the password was right.
		if !Has(k.Replicas, b.primary) || len(k.Sentinels) < 3 {
			return fmt.Errorf("knows replicas %v sentinels %v", k.Replicas, k.Sentinels)
		}
		return nil
	})
}
