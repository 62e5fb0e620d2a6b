package redisctl

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"
)

func TestParseSwitchMaster(t *testing.T) {
	ev, err := ParseSwitchMaster("my-app-1 127.0.0.11 20000 127.0.0.12 20001")
	if err != nil || ev != (SwitchMaster{Name: "my-app-1", From: "127.0.0.11:20000", To: "127.0.0.12:20001"}) {
		t.Errorf("ParseSwitchMaster = %+v, %v", ev, err)
	}
	if ev, err := ParseSwitchMaster("m ::1 6379 ::1 6380"); err != nil || ev.To != "[::1]:6380" {
		t.Errorf("IPv6: %+v, %v", ev, err)
	}
	for _, bad := range []string{"", "m 127.0.0.1 1 127.0.0.2", "m 127.0.0.1 x 127.0.0.2 2", "m 127.0.0.1 1 127.0.0.2 70000"} {
		if _, err := ParseSwitchMaster(bad); err == nil {
			t.Errorf("ParseSwitchMaster(%q): no error", bad)
		}
	}
	ev, err = ParsePromoting("slave 127.0.0.12:20001 127.0.0.12 20001 @ my-app-1 127.0.0.11 20000")
	if err != nil || ev != (SwitchMaster{Name: "my-app-1", From: "127.0.0.11:20000", To: "127.0.0.12:20001", Promoting: true}) {
		t.Errorf("ParsePromoting = %+v, %v", ev, err)
	}
	for _, bad := range []string{"", "master my-app-1 127.0.0.11 20000", "slave 127.0.0.12:1 127.0.0.12 1 @ m 127.0.0.11",
		"slave 127.0.0.12:1 127.0.0.12 x @ m 127.0.0.11 2", "sentinel a 127.0.0.1 1 @ m 127.0.0.2 2"} {
		if _, err := ParsePromoting(bad); err == nil {
			t.Errorf("ParsePromoting(%q): no error", bad)
		}
	}
}

// TestRealSwitchMasterWatch: every sentinel announces a forced failover to
// its subscribers, the one that leads it first announces the promotion; a
// sentinel that stops answering (SIGSTOP: no reset, as a
// vanished host) ends its watch within watchIdle + SentinelTimeout; closing
// the ctx ends a watch at once; a dead address fails within SentinelTimeout.
func TestRealSwitchMasterWatch(t *testing.T) {
	ctx := context.Background()
	const name = "redisctl-watch"
	b := startBusiness(t, name)
	type got struct {
		ev  SwitchMaster
		err error
		at  time.Time
	}
	results := make(chan got, 2*len(b.sentinels))
	for _, s := range b.sentinels {
		w, err := WatchSwitchMaster(ctx, s, testPassword)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		go func() {
			nctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			for {
				ev, err := w.Next(nctx)
				results <- got{ev, err, time.Now()}
				if err != nil || !ev.Promoting {
					return
				}
			}
		}()
	}
	start := time.Now()
	if _, err := Failover(ctx, b.sentinels, testPassword, name); err != nil {
		t.Fatal(err)
	}
	want := SwitchMaster{Name: name, From: b.primary, To: b.replica}
	promoting := 0
	for switched := 0; switched < len(b.sentinels); {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		w := want
		w.Promoting = r.ev.Promoting
		if r.ev != w {
			t.Fatalf("announcement %+v; want %+v", r.ev, w)
		}
		if r.ev.Promoting {
			promoting++
			t.Logf("%s heard %s after SENTINEL FAILOVER", PromotingChannel, r.at.Sub(start).Round(time.Millisecond))
			continue
		}
		switched++
		t.Logf("%s heard %s after SENTINEL FAILOVER", SwitchMasterChannel, r.at.Sub(start).Round(time.Millisecond))
	}
	if promoting != 1 {
		t.Errorf("%d sentinels announced the promotion, want the leader only", promoting)
	}

	// A frozen sentinel: the watch notices it by its PING.
	s, p := startSentinel(t, ip3, "other", b.replica)
	w, err := WatchSwitchMaster(ctx, s, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = w.Next(ctx)
	if err == nil {
		t.Fatal("Next on a frozen sentinel: no error")
	}
	if d := time.Since(start); d > watchIdle+SentinelTimeout+500*time.Millisecond {
		t.Errorf("a frozen sentinel was noticed after %v", d)
	}
	t.Logf("frozen sentinel noticed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT)

	// Closing the ctx ends a waiting watch.
	cctx, cancel := context.WithCancel(ctx)
	w2, err := WatchSwitchMaster(cctx, b.sentinels[0], testPassword)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := w2.Next(cctx)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Next after cancel: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Next did not return after its ctx was cancelled")
	}
	w2.Close()

	start = time.Now()
	if _, err := WatchSwitchMaster(ctx, deadAddr(t, ip3), testPassword); err == nil {
		t.Error("watch of a dead address: no error")
	}
	if d := time.Since(start); d > 2*SentinelTimeout {
		t.Errorf("watch of a dead address took %v", d)
	}
}
