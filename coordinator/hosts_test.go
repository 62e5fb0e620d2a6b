package coordinator

import (
	"context"
	"net"
	"testing"
	"time"
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
