package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
)

func TestDeriveState(t *testing.T) {
	running := &runtime.Status{State: runtime.StateRunning, Pid: 42}
	stopped := &runtime.Status{State: runtime.StateStopped, ExitCode: 1}
	missing := &runtime.Status{State: runtime.StateMissing}
	crashed := failure{reason: "killed by signal 9 (exit code 137)", lines: []string{"ready to accept connections"}, nextRestart: time.Unix(1, 0)}
	noAnswer := errors.New("connection refused")
	tests := []struct {
		name       string
		st         *runtime.Status
		f          failure
		probed     bool
		probeErr   error
		want       string
		wantDetail string
	}{
		{"answers", running, failure{}, true, nil, api.MemberRunning, ""},
		{"answers after a crash", running, crashed, true, nil, api.MemberRunning, ""},
		{"up, not answering", running, failure{}, true, noAnswer, api.MemberStarting, "connection refused"},
		{"restarted after a crash, not answering", running, crashed, true, noAnswer, api.MemberFailed, "signal 9"},
		{"exited, recorded", stopped, crashed, false, nil, api.MemberFailed, "last log lines:\nready to accept"},
		{"exited, not recorded", stopped, failure{}, false, nil, api.MemberFailed, "exited"},
		{"failed to start", missing, failure{reason: "ensure image: image not found"}, false, nil, api.MemberFailed, "image not found"},
		{"not started yet", missing, failure{}, false, nil, api.MemberPending, ""},
		{"runtime unknown, answers", nil, failure{}, true, nil, api.MemberRunning, ""},
		{"runtime unknown, silent", nil, failure{}, true, noAnswer, api.MemberPending, "not answering"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := deriveState(tt.st, tt.f, tt.probed, tt.probeErr)
			if got != tt.want || !strings.Contains(detail, tt.wantDetail) {
				t.Fatalf("deriveState = %s, %q; want %s with %q", got, detail, tt.want, tt.wantDetail)
			}
		})
	}
}

func TestExitReasonAndScrub(t *testing.T) {
	for code, want := range map[int]string{137: "killed by signal 9", 1: "exited with code 1", -1: "status unknown"} {
		if got := exitReason(code, time.Time{}); !strings.Contains(got, want) {
			t.Errorf("exitReason(%d) = %q, want %q", code, got, want)
		}
	}
	lines := scrub([]string{">>> 'user default on >s3cr3t ~* &* +@all'", "fine"}, api.NewSecret("s3cr3t"))
	if strings.Contains(strings.Join(lines, "\n"), "s3cr3t") || lines[1] != "fine" {
		t.Fatalf("scrub left the password: %q", lines)
	}
}

// The spec hash ignores what changes live and a failover, and follows what
// needs a restart.
func TestSpecHash(t *testing.T) {
	a := &Agent{cfg: Config{DataDir: "/var/lib/cacheplane/agent", Address: "127.0.0.11"}}
	base := api.Assignment{
		MemberID: "m1", AddonID: "a-1", Role: api.RoleRedis, Address: "127.0.0.11", Port: 20000,
		Engine: api.EngineRedis, Version: "7.0.15", Image: api.ImageRedis7, PlanMemoryMB: 256, Password: api.NewSecret("pw"), FleetPassword: api.NewSecret("fleet-pw"),
	}
	hash := func(mut func(*api.Assignment)) string {
		as := base
		mut(&as)
		p, err := a.planMember(as)
		if err != nil {
			t.Fatal(err)
		}
		return p.spec.SpecHash
	}
	h0 := hash(func(*api.Assignment) {})
	same := map[string]func(*api.Assignment){
		"plan memory": func(as *api.Assignment) { as.PlanMemoryMB = 1024 },
		"persistence": func(as *api.Assignment) { as.Settings.Persistence = api.PersistenceAOF },
		"cache mode":  func(as *api.Assignment) { as.Settings.CacheMode = true },
		"replica of":  func(as *api.Assignment) { as.ReplicaOf = "127.0.0.12:20001" },
		// Applied live (fleetauth.go): an addon given one restarts nothing.
		"fleet credential": func(as *api.Assignment) { as.FleetPassword = api.NewSecret("another-fleet-pw") },
	}
	for name, mut := range same {
		if hash(mut) != h0 {
			t.Errorf("%s changes the spec hash (would restart redis)", name)
		}
	}
	differ := map[string]func(*api.Assignment){
		"port":     func(as *api.Assignment) { as.Port = 20001 },
		"image":    func(as *api.Assignment) { as.Image = api.ImageValkey8 },
		"version":  func(as *api.Assignment) { as.Version = "7.2" },
		"password": func(as *api.Assignment) { as.Password = api.NewSecret("other") },
	}
	for name, mut := range differ {
		if hash(mut) == h0 {
			t.Errorf("%s does not change the spec hash", name)
		}
	}
}
