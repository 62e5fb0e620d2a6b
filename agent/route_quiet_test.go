package agent

import (
	"testing"
	"time"
)

func TestRouteQuiet(t *testing.T) {
	t0 := time.Unix(1000, 0)
	sock := sockID{ino: 7, ctime: 1}
	clean := routePass{at: t0, clean: true, sock: sock}
	for _, tt := range []struct {
		name      string
		last      routePass
		sock      sockID
		releaseAt time.Time
		now       time.Time
		want      bool
	}{
		{"clean read just now, same socket: skip", clean, sock, time.Time{}, t0.Add(500 * time.Millisecond), true},
		{"clean read routeFullEvery ago: read", clean, sock, time.Time{}, t0.Add(routeFullEvery), false},
		{"never read: read", routePass{}, sock, time.Time{}, t0, false},
		{"last read sent commands or failed: read", routePass{at: t0, sock: sock}, sock, time.Time{}, t0.Add(time.Millisecond), false},
		{"HAProxy restarted (new socket file): read", clean, sockID{ino: 8, ctime: 2}, time.Time{}, t0.Add(time.Millisecond), false},
		{"no socket file: read", clean, sockID{}, time.Time{}, t0.Add(time.Millisecond), false},
		{"VIP release not due yet: skip", clean, sock, t0.Add(3 * time.Second), t0.Add(time.Second), true},
		{"VIP release due since the last read: read", clean, sock, t0.Add(time.Second), t0.Add(1500 * time.Millisecond), false},
		{"VIP release read after it came due: skip", routePass{at: t0.Add(2 * time.Second), clean: true, sock: sock}, sock, t0.Add(time.Second), t0.Add(2500 * time.Millisecond), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := routeQuiet(tt.last, tt.sock, tt.releaseAt, tt.now); got != tt.want {
				t.Fatalf("routeQuiet = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestUntilTick(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tt := range []struct {
		phase time.Duration
		now   time.Time
		every time.Duration
		want  time.Duration
	}{
		{0, t0, 500 * time.Millisecond, 500 * time.Millisecond}, // on a tick: the next one
		{0, t0.Add(100 * time.Millisecond), 500 * time.Millisecond, 400 * time.Millisecond},
		{0, t0.Add(499 * time.Millisecond), 500 * time.Millisecond, time.Millisecond},
		{0, t0.Add(500 * time.Millisecond), 500 * time.Millisecond, 500 * time.Millisecond},
		// Shifted grid: t0+300ms+k·500ms.
		{300 * time.Millisecond, t0, 500 * time.Millisecond, 300 * time.Millisecond},
		{300 * time.Millisecond, t0.Add(300 * time.Millisecond), 500 * time.Millisecond, 500 * time.Millisecond},
		{300 * time.Millisecond, t0.Add(400 * time.Millisecond), 500 * time.Millisecond, 400 * time.Millisecond},
		// A phase longer than the interval: taken modulo (the 250 ms grid
		// holds the 1 s grid's instants).
		{800 * time.Millisecond, t0, 250 * time.Millisecond, 50 * time.Millisecond},
		{800 * time.Millisecond, t0, time.Second, 800 * time.Millisecond},
	} {
		if got := untilTick(tt.now, tt.every, tt.phase); got != tt.want {
			t.Errorf("phase %v: untilTick(t0+%v, %v) = %v; want %v", tt.phase, tt.now.Sub(t0), tt.every, got, tt.want)
		}
	}
}
