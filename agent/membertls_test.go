package agent

import (
	"testing"
	"time"
)

// TestSentinelRestartAt: an addon's sentinels restart for a renewed
// certificate one at a time, in address order, a step apart from the
// issuance (a minute after NotBefore).
func TestSentinelRestartAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ss := []string{"127.0.0.3:26379", "127.0.0.1:26379", "127.0.0.2:26379"}
	long := nb.Add(90 * 24 * time.Hour)
	for i, self := range []string{"127.0.0.1:26379", "127.0.0.2:26379", "127.0.0.3:26379"} {
		want := nb.Add(time.Minute + time.Duration(i)*15*time.Second)
		if got := sentinelRestartAt(self, ss, nb, long); !got.Equal(want) {
			t.Errorf("%s: %v, want %v", self, got, want)
		}
	}
	// A short life (a test's addon_cert_ttl): a twentieth of it, at least 1 s.
	if got := sentinelRestartStep(70 * time.Second); got != 3500*time.Millisecond {
		t.Errorf("step for 70 s: %v", got)
	}
	if got := sentinelRestartStep(5 * time.Second); got != time.Second {
		t.Errorf("step for 5 s: %v", got)
	}
}
