package coordinator

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// TestAddonCertDue: the renewal decision, as a table.
func TestAddonCertDue(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	want := certNames{DNS: []string{"a-1"}, IPs: []string{"127.0.0.11", "127.0.0.20"}}
	held := func(from, to time.Time, ips ...string) certHeld {
		return certHeld{NotBefore: from, NotAfter: to, Names: certNames{DNS: []string{"a-1"}, IPs: ips}}
	}
	day := 24 * time.Hour
	for _, tc := range []struct {
		name string
		held certHeld
		ok   bool
		due  bool
		why  string
	}{
		{"none", certHeld{}, false, true, certNone},
		{"fresh", held(now.Add(-day), now.Add(89*day), "127.0.0.11", "127.0.0.20"), true, false, ""},
		{"just before two thirds", held(now.Add(-59*day), now.Add(31*day), "127.0.0.11", "127.0.0.20"), true, false, ""},
		{"two thirds passed", held(now.Add(-60*day), now.Add(30*day), "127.0.0.11", "127.0.0.20"), true, true, certRenew},
		{"expired", held(now.Add(-91*day), now.Add(-day), "127.0.0.11", "127.0.0.20"), true, true, certExpired},
		{"an address gone", held(now.Add(-day), now.Add(89*day), "127.0.0.11"), true, true, certRenamed},
		{"an address more", held(now.Add(-day), now.Add(89*day), "127.0.0.11", "127.0.0.20", "127.0.0.30"), true, true, certRenamed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			due, why := addonCertDue(tc.held, tc.ok, want, now)
			if due != tc.due || why != tc.why {
				t.Errorf("due %v (%q), want %v (%q)", due, why, tc.due, tc.why)
			}
		})
	}
}

// TestAddonCertNames: the entrypoint, each HAProxy host's address and
// public address, the addon id; redis and sentinel hosts are not named.
func TestAddonCertNames(t *testing.T) {
	st := &State{Hosts: map[string]api.Host{
		"h1": {ID: "h1", Address: "127.0.0.11", PublicAddress: "127.0.0.111"},
		"h2": {ID: "h2", Address: "127.0.0.12"},
		"h3": {ID: "h3", Address: "127.0.0.13", PublicAddress: "127.0.0.113"},
	}}
	a := api.Addon{ID: "a-1", Entrypoint: "127.0.0.200:30000", Members: []api.Member{
		{ID: "r1", Role: api.RoleRedis, HostID: "h3"},
		{ID: "p1", Role: api.RoleHAProxy, HostID: "h1"},
		{ID: "p2", Role: api.RoleHAProxy, HostID: "h2"},
	}}
	got := addonCertNames(st, a)
	wantIPs := []string{"127.0.0.11", "127.0.0.111", "127.0.0.12", "127.0.0.200"}
	if len(got.IPs) != len(wantIPs) || len(got.DNS) != 1 || got.DNS[0] != "a-1" {
		t.Fatalf("names %+v, want IPs %v and DNS a-1", got, wantIPs)
	}
	for i := range wantIPs {
		if got.IPs[i] != wantIPs[i] {
			t.Fatalf("IPs %v, want %v", got.IPs, wantIPs)
		}
	}
}

// TestApplyAddonCert: command 37 records the certificate and key; an
// unknown addon or an empty key is refused; a certificate issued for the
// wanted names reads back as held for them and is not due.
func TestApplyAddonCert(t *testing.T) {
	now := time.Now()
	ca, err := identity.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	f := &FSM{state: newState()}
	f.state.Addons["a-1"] = api.Addon{ID: "a-1", App: "app"}
	want := certNames{DNS: []string{"a-1"}, IPs: []string{"127.0.0.20"}}
	cert, key, err := ca.IssueServer(identity.ServerRequest{Name: "a-1", DNSNames: want.DNS, IPs: want.IPs, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := f.applyAddonCert(AddonCertCmd{AddonID: "nope", Cert: cert, Key: api.NewSecret(key)}).(error); err == nil {
		t.Error("unknown addon accepted")
	}
	if err, _ := f.applyAddonCert(AddonCertCmd{AddonID: "a-1", Cert: cert}).(error); err == nil {
		t.Error("empty key accepted")
	}
	if res := f.applyAddonCert(AddonCertCmd{AddonID: "a-1", Cert: cert, Key: api.NewSecret(key)}); res != nil {
		t.Fatal(res)
	}
	a := f.state.Addons["a-1"]
	if a.TLSCert != cert || a.TLSKey.Reveal() != key || !a.Redacted().TLSKey.IsZero() {
		t.Fatal("certificate not recorded, or its key not redacted")
	}
	held, ok := parseCertHeld(a.TLSCert)
	if due, why := addonCertDue(held, ok, want, now); due {
		t.Errorf("a fresh certificate is due: %s", why)
	}
}

// TestCertScan: the controller looks at the addons only when the state
// moved on or a held certificate falls due, parses a certificate once,
// lists what is due sorted, and forgets removed addons.
func TestCertScan(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	ca, err := identity.NewCA(now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	st := newState()
	st.Hosts["h1"] = api.Host{ID: "h1", Address: "127.0.0.11"}
	addon := func(id string) api.Addon {
		return api.Addon{ID: id, App: id, Entrypoint: "127.0.0.11:30000",
			Members: []api.Member{{ID: id + "-p", Role: api.RoleHAProxy, HostID: "h1", Address: "127.0.0.11"}}}
	}
	issue := func(a api.Addon, from time.Time, life time.Duration) api.Addon {
		names := addonCertNames(st, a)
		cert, _, err := ca.IssueServer(identity.ServerRequest{Name: a.ID, DNSNames: names.DNS, IPs: names.IPs, NotBefore: from, NotAfter: from.Add(life)})
		if err != nil {
			t.Fatal(err)
		}
		a.TLSCert = cert
		return a
	}
	ids := func(d []certDue) []string {
		var out []string
		for _, x := range d {
			out = append(out, x.id+":"+x.why)
		}
		return out
	}
	st.Addons["b"] = addon("b")
	st.Addons["a"] = addon("a")
	var s certScan

	if got := ids(s.due(st, 10, now)); !slices.Equal(got, []string{"a:" + certNone, "b:" + certNone}) {
		t.Fatalf("first look: %v", got)
	}
	// Issued (the state moves on): nothing due; the earliest renewal is
	// a's, two thirds into its 3 hours.
	st.Addons["a"] = issue(st.Addons["a"], now, 3*time.Hour)
	st.Addons["b"] = issue(st.Addons["b"], now, 30*time.Hour)
	if got := s.due(st, 12, now); got != nil {
		t.Fatalf("after issuing: %v due", ids(got))
	}
	if want := now.Add(2 * time.Hour); !s.nextDue.Equal(want) {
		t.Fatalf("next due %v, want %v", s.nextDue, want)
	}
	// Same index, before the next due time: not looked at, even though the
	// state (changed behind the scan's back here) would make c due.
	st.Addons["c"] = addon("c")
	if got := s.due(st, 12, now.Add(time.Hour)); got != nil {
		t.Fatalf("looked at an unchanged state: %v", ids(got))
	}
	// The state moves on: c is seen.
	if got := ids(s.due(st, 13, now.Add(time.Hour))); !slices.Equal(got, []string{"c:" + certNone}) {
		t.Fatalf("new addon: %v", got)
	}
	// A due certificate is found at the same index once its time comes.
	st.Addons["c"] = issue(st.Addons["c"], now, 30*time.Hour)
	if got := s.due(st, 14, now.Add(time.Hour)); got != nil {
		t.Fatalf("after issuing c: %v", ids(got))
	}
	if got := ids(s.due(st, 14, now.Add(2*time.Hour))); !slices.Equal(got, []string{"a:" + certRenew}) {
		t.Fatalf("renewal at the same index: %v", got)
	}
	// Removed addons are forgotten.
	delete(st.Addons, "a")
	delete(st.Addons, "b")
	s.due(st, 15, now.Add(2*time.Hour))
	if _, ok := s.parsed["a"]; ok || len(s.parsed) != 1 {
		t.Fatalf("parsed cache holds %d entries after removals (a kept: %v)", len(s.parsed), ok)
	}
}

// BenchmarkCertScan: one pass of the addon-certificate controller over
// 10,000 addons holding fresh certificates, as the leader runs it every
// second: "moved" when the state moved on since the last look (names
// computed for every addon, certificates parsed once before), "idle" when
// it did not. Before the scan (af42d38) every pass sorted the addons and
// parsed every certificate.
func BenchmarkCertScan(b *testing.B) {
	now := time.Now()
	ca, err := identity.NewCA(now.Add(-time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	st := newState()
	st.Hosts["h1"] = api.Host{ID: "h1", Address: "127.0.0.11"}
	cert, _, err := ca.IssueServer(identity.ServerRequest{Name: "x", DNSNames: []string{"x"}, IPs: []string{"127.0.0.11"}, NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10000 {
		id := fmt.Sprintf("a-%05d", i)
		st.Addons[id] = api.Addon{ID: id, App: id, Entrypoint: "127.0.0.11:30000", TLSCert: cert,
			Members: []api.Member{{ID: id + "-p", Role: api.RoleHAProxy, HostID: "h1", Address: "127.0.0.11"}}}
	}
	b.Run("parse-every-certificate", func(b *testing.B) {
		for b.Loop() {
			for _, a := range sortedAddons(st.Addons) {
				held, ok := parseCertHeld(a.TLSCert)
				addonCertDue(held, ok, addonCertNames(st, a), now)
			}
		}
	})
	var s certScan
	s.due(st, 1, now) // every addon due (names differ): parsed once
	idx := uint64(2)
	b.Run("moved", func(b *testing.B) {
		for b.Loop() {
			idx++
			s.due(st, idx, now)
		}
	})
	s.index, s.nextDue = idx, now.Add(time.Hour)
	b.Run("idle", func(b *testing.B) {
		for b.Loop() {
			s.due(st, idx, now)
		}
	})
}
