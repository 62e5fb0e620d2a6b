package kernelpath

import (
	"net/netip"
	"slices"
	"testing"
)

func TestDiff(t *testing.T) {
	entry := netip.MustParseAddrPort("127.0.1.5:7000")
	p1 := netip.MustParseAddrPort("127.0.0.81:7001")
	p2 := netip.MustParseAddrPort("127.0.0.82:7002")
	fwd := func(addon string, primary netip.AddrPort) Forward {
		return Forward{Addon: addon, Entry: entry, Primary: primary, MaxConn: 2000}
	}
	// have lists the kernel's rules as Rules(fs...) makes them (handles from 1).
	have := func(fs ...Forward) []Have {
		var out []Have
		for _, f := range fs {
			for _, r := range Rules(f) {
				out = append(out, Have{Chain: r.Chain, User: r.User, Handle: uint64(len(out) + 1)})
			}
		}
		return out
	}
	users := func(rs []RuleSpec) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.User)
		}
		slices.Sort(out)
		return out
	}
	delUsers := func(hs []Have) []string {
		var out []string
		for _, h := range hs {
			out = append(out, h.User)
		}
		slices.Sort(out)
		return out
	}
	rulesOf := func(f Forward, kinds ...string) []string {
		var out []string
		for _, r := range Rules(f) {
			if _, k := owner(r.User); slices.Contains(kinds, k) {
				out = append(out, r.User)
			}
		}
		slices.Sort(out)
		return out
	}
	dnatKinds := []string{kindDNATOut, kindDNATPre, kindMasq}
	dup := have(fwd("a", p1))
	dup = append(dup, Have{Chain: dup[0].Chain, User: dup[0].User, Handle: 99})
	cases := []struct {
		name      string
		have      []Have
		want      []Forward
		add, del  []string
		drop      bool
		cuts      int
		wantEmpty bool
	}{
		{name: "nothing, nothing wanted", drop: true},
		{name: "first install", want: []Forward{fwd("a", p1)}, add: users(Rules(fwd("a", p1)))},
		{name: "unchanged", have: have(fwd("a", p1)), want: []Forward{fwd("a", p1)}, wantEmpty: true},
		{name: "primary unknown (agent start): dnat kept", have: have(fwd("a", p1)), want: []Forward{fwd("a", netip.AddrPort{})}, wantEmpty: true},
		{name: "primary unknown, nothing installed: cap only", want: []Forward{fwd("a", netip.AddrPort{})},
			add: rulesOf(fwd("a", p1), kindCapOut, kindCapPre)},
		{name: "switch: dnat replaced, cap kept, cut", have: have(fwd("a", p1)), want: []Forward{fwd("a", p2)},
			add: rulesOf(fwd("a", p2), dnatKinds...), del: rulesOf(fwd("a", p1), dnatKinds...), cuts: 1},
		{name: "addon removed, another kept", have: have(fwd("a", p1), fwd("b", p2)), want: []Forward{fwd("b", p2)},
			del: users(Rules(fwd("a", p1)))},
		{name: "last addon removed: table dropped", have: have(fwd("a", p1)), drop: true},
		{name: "duplicate deleted", have: dup, want: []Forward{fwd("a", p1)}, del: []string{dup[0].User}},
		{name: "a foreign rule in our table goes", have: append(have(fwd("a", p1)), Have{Chain: "dnat_out", User: "x", Handle: 50}),
			want: []Forward{fwd("a", p1)}, del: []string{"x"}},
		{name: "invalid forward (IPv6) ignored", want: []Forward{{Addon: "a", Entry: netip.MustParseAddrPort("[::1]:7000"), Primary: p1}}, drop: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Diff(c.have, c.want)
			if p.DropTable != c.drop {
				t.Fatalf("drop = %v, want %v (%+v)", p.DropTable, c.drop, p)
			}
			if c.wantEmpty && (len(p.Add)+len(p.Del) != 0) {
				t.Fatalf("plan %+v, want nothing", p)
			}
			if got := users(p.Add); !slices.Equal(got, c.add) {
				t.Errorf("add %q, want %q", got, c.add)
			}
			if got := delUsers(p.Del); !slices.Equal(got, c.del) {
				t.Errorf("del %q, want %q", got, c.del)
			}
			if len(p.Cuts) != c.cuts {
				t.Errorf("cuts %+v, want %d", p.Cuts, c.cuts)
			}
		})
	}
}

func TestRulesUserData(t *testing.T) {
	f := Forward{Addon: "r1", Entry: netip.MustParseAddrPort("127.0.1.5:7000"), Primary: netip.MustParseAddrPort("127.0.0.81:7001"), MaxConn: 2000}
	want := []string{
		"cacheplane r1 cap-out 127.0.1.5:7000 max 2000",
		"cacheplane r1 cap-pre 127.0.1.5:7000 max 2000",
		"cacheplane r1 dnat-out 127.0.1.5:7000>127.0.0.81:7001",
		"cacheplane r1 dnat-pre 127.0.1.5:7000>127.0.0.81:7001",
		"cacheplane r1 masq 127.0.1.5:7000>127.0.0.81:7001",
	}
	var got []string
	for _, r := range Rules(f) {
		got = append(got, r.User)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rules %q, want %q", got, want)
	}
	if TableName("host-1") != "cacheplane_host_1" {
		t.Fatalf("table name %q", TableName("host-1"))
	}
}
