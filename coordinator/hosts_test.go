package coordinator

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

func TestHostVerdict(t *testing.T) {
	const suspect, down = time.Second, 5 * time.Second
	tests := []struct {
		name                          string
		silence                       time.Duration
		hasMembers, probed, answered  bool
		wantDown, wantProbe, wantLost bool
	}{
		{"heartbeating", 300 * time.Millisecond, true, false, false, false, false, false},
		{"silent: probe it", 1100 * time.Millisecond, true, false, false, false, true, false},
		{"silent, members refuse: lost", 1200 * time.Millisecond, true, true, false, true, false, true},
		{"silent, a member accepts (busy or agent gone): wait", 1200 * time.Millisecond, true, true, true, false, false, false},
		{"silent, no members: nothing to probe, wait", 2 * time.Second, false, false, false, false, false, false},
		{"silent for down-after while a member answers: down, not lost", down, true, true, true, true, false, false},
		{"silent for down-after, nothing answers: down and lost", down, true, true, false, true, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, p, l, why := hostVerdict(tc.silence, suspect, down, tc.hasMembers, tc.probed, tc.answered)
			if d != tc.wantDown || p != tc.wantProbe || l != tc.wantLost || d != (why != "") {
				t.Fatalf("down %v probe %v lost %v why %q", d, p, l, why)
			}
		})
	}
	if d, p, _, _ := hostVerdict(2*time.Second, 0, down, true, false, false); d || p {
		t.Fatal("suspect_after 0 turns the fast path off")
	}
}

func TestProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A listener that never accepts still completes connections (the
	// kernel's backlog): that is what a busy redis looks like.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	if !probeTCP(ctx, []string{deadAddr, ln.Addr().String()}) {
		t.Fatal("a listening member was not seen")
	}
	if probeTCP(ctx, []string{deadAddr}) {
		t.Fatal("a closed port was seen as up")
	}
}

func TestSilenceStorm(t *testing.T) {
	tests := []struct {
		silent, up int
		want       bool
	}{
		{0, 10, false},
		{1, 10, false},
		{5, 10, false}, // half: a rack of a small fleet, judged host by host
		{6, 10, true},
		{10, 10, true}, // a new leader nobody reached yet
		{1, 1, false},  // a lone host is judged alone
		{2, 2, false},
		{2, 3, true},
		{1, 3, false},
		{5001, 10000, true},
	}
	for _, tc := range tests {
		if got := silenceStorm(tc.silent, tc.up); got != tc.want {
			t.Errorf("silenceStorm(%d silent of %d) = %v, want %v", tc.silent, tc.up, got, tc.want)
		}
	}
}

// TestSilenceStormHoldsHostsDown: with three of four hosts silent at once
// none is marked down (the coordinator, not the fleet, is the likelier
// cause); once two are heard again, the one still silent is marked down.
func TestSilenceStormHoldsHostsDown(t *testing.T) {
	_, cfg := startTestCoordinator(t, "127.0.0.43") // host_down_after 600 ms
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	ids := []string{"s1", "s2", "s3", "s4"}
	beat := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			if _, err := admin.Heartbeat(ctx, api.HeartbeatRequest{HostID: id}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, id := range ids {
		if _, err := admin.Register(ctx, api.Host{ID: id, Address: fmt.Sprintf("127.0.0.%d", 44+i), MemoryMB: 1024}); err != nil {
			t.Fatal(err)
		}
		beat(id)
	}
	state := func() map[string]api.HostState {
		t.Helper()
		hosts, err := admin.Hosts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]api.HostState{}
		for _, h := range hosts {
			m[h.ID] = h.State
		}
		return m
	}
	// All four heard (a host registered on a loaded machine may have been
	// judged alone, silent, before the next registered: heard again).
	testutil.WaitFor(t, 10*time.Second, func() error {
		beat(ids...)
		for id, st := range state() {
			if st != api.HostReady {
				return fmt.Errorf("%s is %s", id, st)
			}
		}
		return nil
	})
	// Only s1 heartbeats for 3 s (five times host_down_after): none down.
	held := time.Now().Add(3 * time.Second)
	for time.Now().Before(held) {
		beat("s1")
		for id, st := range state() {
			if st == api.HostDown {
				t.Fatalf("%s marked down while 3 of 4 hosts were silent at once", id)
			}
		}
		time.Sleep(100 * time.Millisecond) // the heartbeat's cadence, not a wait for an outcome
	}
	// s2 and s3 are heard again: s4 alone is silent and goes down.
	testutil.WaitFor(t, 10*time.Second, func() error {
		beat("s1", "s2", "s3")
		st := state()
		for _, id := range []string{"s1", "s2", "s3"} {
			if st[id] == api.HostDown {
				return fmt.Errorf("%s down although heartbeating", id)
			}
		}
		if st["s4"] != api.HostDown {
			return fmt.Errorf("s4 is %s; want down", st["s4"])
		}
		return nil
	})
}
