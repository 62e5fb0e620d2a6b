package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
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

// TestPlanMemberTLS: with member TLS, a redis or sentinel member renders
// TLS only with the files of its dir and a haproxy verifies its servers
// with the CA; without the certificate (or the CA) the member is not
// rendered (it waits); the spec hash of a member without member TLS is
// the one it had before member TLS existed, and member TLS changes it.
func TestPlanMemberTLS(t *testing.T) {
	a := &Agent{cfg: Config{Address: "127.0.0.13", DataDir: "/var/lib/cacheplane"}}
	base := func(role api.Role) api.Assignment {
		return api.Assignment{MemberID: "app-1-" + string(role) + "-0", AddonID: "app-1", App: "app", Role: role, Port: 20000,
			Engine: api.EngineRedis, Version: "7.0.15", Image: "img", PlanMemoryMB: 256, Password: api.NewSecret("app-password"),
			FleetPassword: api.NewSecret("fleet-password"), Settings: api.DefaultSettings(), MasterName: "app-1",
			Primary: "127.0.0.13:20000", Servers: []string{"127.0.0.11:20000", "127.0.0.12:20000"}}
	}
	dir := "/var/lib/cacheplane/members/"
	for _, role := range []api.Role{api.RoleRedis, api.RoleSentinel, api.RoleHAProxy} {
		plain, err := a.planMember(base(role))
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		if plain.tls != nil || strings.Contains(plain.conf, "tls-port") || strings.Contains(plain.conf, "check-ssl") {
			t.Errorf("%s without member TLS renders TLS", role)
		}
		as := base(role)
		as.Settings.MemberTLS = true
		as.CACert = "CA"
		if role != api.RoleHAProxy {
			if _, err := a.planMember(as); !errors.Is(err, errNoMemberCert) {
				t.Errorf("%s without its certificate: err %v, want errNoMemberCert", role, err)
			}
		}
		as.TLSCert, as.TLSKey = "CERT", api.NewSecret("KEY")
		p, err := a.planMember(as)
		if err != nil {
			t.Fatalf("%s with member TLS: %v", role, err)
		}
		if p.spec.SpecHash == plain.spec.SpecHash {
			t.Errorf("%s: member TLS left the spec hash unchanged", role)
		}
		want := []string{"port 0", "tls-port 20000", "tls-cert-file " + dir + as.MemberID + "/tls.crt", "tls-replication yes"}
		if role == api.RoleHAProxy {
			want = []string{"ca-file " + dir + as.MemberID + "/ca.crt verifyhost app-1 check-ssl", "tcp-check connect default"}
		}
		for _, w := range want {
			if !strings.Contains(p.conf, w) {
				t.Errorf("%s with member TLS: %q missing", role, w)
			}
		}
		noCA := as
		noCA.CACert = ""
		if _, err := a.planMember(noCA); !errors.Is(err, errNoMemberCert) {
			t.Errorf("%s without the CA: err %v, want errNoMemberCert", role, err)
		}
	}
}
