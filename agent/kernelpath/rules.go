package kernelpath

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Forward is one addon's kernel entrypoint, as the agent holding its VIP
// wants it.
type Forward struct {
	Addon string
	// Entry is the addon's VIP:port (IPv4).
	Entry netip.AddrPort
	// Primary is where new connections go. Invalid (zero): not known yet
	// (an agent just started, the sentinels not asked): the addon's dnat
	// rules in the kernel are kept as they are.
	Primary netip.AddrPort
	// MaxConn caps the addon's concurrent connections (0: no cap).
	MaxConn int
}

// Rule kinds.
const (
	kindCapOut  = "cap-out"
	kindCapPre  = "cap-pre"
	kindDNATOut = "dnat-out"
	kindDNATPre = "dnat-pre"
	kindMasq    = "masq"
)

// userPrefix starts every rule's user data: the table holds nothing else.
const userPrefix = "cacheplane "

// Chains of an agent's table.
var (
	chainCapOut  = &nftables.Chain{Name: "cap_out", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle}
	chainCapPre  = &nftables.Chain{Name: "cap_pre", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle}
	chainNATOut  = &nftables.Chain{Name: "dnat_out", Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest}
	chainNATPre  = &nftables.Chain{Name: "dnat_pre", Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest}
	chainNATPost = &nftables.Chain{Name: "masq_post", Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}
	chains       = []*nftables.Chain{chainCapOut, chainCapPre, chainNATOut, chainNATPre, chainNATPost}
)

// TableName is the table of the agent of host.
func TableName(host string) string { return "cacheplane_" + strings.ReplaceAll(host, "-", "_") }

// RuleSpec is one rule as the agent wants it: its chain, its user data
// (owner, kind and a key naming everything it matches and does) and its
// expressions.
type RuleSpec struct {
	Chain string
	User  string
	Exprs []expr.Any
}

// Addon and kind of a rule, from its user data ("" when not ours).
func owner(user string) (addon, kind string) {
	if !strings.HasPrefix(user, userPrefix) {
		return "", ""
	}
	fs := strings.Fields(strings.TrimPrefix(user, userPrefix))
	if len(fs) < 2 {
		return "", ""
	}
	return fs[0], fs[1]
}

// Valid reports whether f can be installed (an IPv4 entry; a primary, when
// known, IPv4 too).
func (f Forward) Valid() error {
	if f.Addon == "" || strings.ContainsAny(f.Addon, " \t\n") {
		return fmt.Errorf("kernel entrypoint: addon id %q", f.Addon)
	}
	if !f.Entry.IsValid() || !f.Entry.Addr().Unmap().Is4() || f.Entry.Port() == 0 {
		return fmt.Errorf("kernel entrypoint of %s: entry %s is not an IPv4 address and port", f.Addon, f.Entry)
	}
	if f.Primary.IsValid() && (!f.Primary.Addr().Unmap().Is4() || f.Primary.Port() == 0) {
		return fmt.Errorf("kernel entrypoint of %s: primary %s is not an IPv4 address and port", f.Addon, f.Primary)
	}
	if f.MaxConn < 0 {
		return fmt.Errorf("kernel entrypoint of %s: max conn %d", f.Addon, f.MaxConn)
	}
	return nil
}

// Rules is the rule set of f (pure). With the primary unknown it has no
// dnat rules (Diff keeps the kernel's).
func Rules(f Forward) []RuleSpec {
	vip := f.Entry.Addr().Unmap().As4()
	port := f.Entry.Port()
	entry := f.Entry.String()
	match := func() []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: vip[:]},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		}
	}
	user := func(kind, key string) string { return userPrefix + f.Addon + " " + kind + " " + key }
	var out []RuleSpec
	if f.MaxConn > 0 {
		capKey := fmt.Sprintf("%s max %d", entry, f.MaxConn)
		capExprs := func() []expr.Any {
			return append(match(),
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
				// ct count over N: NFT_CONNLIMIT_F_INV matches above N.
				&expr.Connlimit{Count: uint32(f.MaxConn), Flags: 1},
				&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
			)
		}
		out = append(out,
			RuleSpec{Chain: chainCapOut.Name, User: user(kindCapOut, capKey), Exprs: capExprs()},
			RuleSpec{Chain: chainCapPre.Name, User: user(kindCapPre, capKey), Exprs: capExprs()},
		)
	}
	if f.Primary.IsValid() {
		to := f.Primary.Addr().Unmap().As4()
		key := entry + ">" + f.Primary.String()
		dnat := func() []expr.Any {
			return append(match(),
				&expr.Immediate{Register: 1, Data: to[:]},
				&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(f.Primary.Port())},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
			)
		}
		out = append(out,
			RuleSpec{Chain: chainNATOut.Name, User: user(kindDNATOut, key), Exprs: dnat()},
			RuleSpec{Chain: chainNATPre.Name, User: user(kindDNATPre, key), Exprs: dnat()},
			masq(f, user(kindMasq, key)),
		)
	}
	return out
}

// masq is the rule that masquerades a connection forwarded to primary when
// it leaves for another host (its replies must come back through the
// holder): `ip daddr PRIMARY tcp dport P ct status dnat oifname != "lo"
// masquerade`. (A ct original-direction match would name the entry, but
// the library cannot read such a rule back.)
func masq(f Forward, user string) RuleSpec {
	to := f.Primary.Addr().Unmap().As4()
	lo := make([]byte, 16)
	copy(lo, "lo")
	return RuleSpec{Chain: chainNATPost.Name, User: user, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: to[:]},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(f.Primary.Port())},
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: lo},
		&expr.Masq{},
	}}
}

// ipsDstNAT is conntrack's IPS_DST_NAT status bit.
const ipsDstNAT = 1 << 5

// Have is a rule the kernel holds in the table.
type Have struct {
	Chain  string
	User   string
	Handle uint64
}

// Cut is a primary change: the dnat rule of Entry moved from From (the
// demoted node; invalid if unreadable) to Primary. The conntrack entries
// forwarded to Entry whose reply does not come from Primary are to be
// deleted (CutStale).
type Cut struct {
	Addon   string
	Entry   netip.AddrPort
	From    netip.AddrPort
	Primary netip.AddrPort
}

// dnatTarget reads the primary of a dnat rule from its user data
// ("... VIP:port>PRIMARY").
func dnatTarget(user string) netip.AddrPort {
	fs := strings.Fields(user)
	if len(fs) == 0 {
		return netip.AddrPort{}
	}
	_, to, ok := strings.Cut(fs[len(fs)-1], ">")
	if !ok {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(to)
	return ap
}

// Plan is what one transaction does.
type Plan struct {
	Del []Have
	Add []RuleSpec
	// DropTable: no rule is wanted; the table goes, if there is one (Del
	// and Add empty).
	DropTable bool
	// Cuts follow the transaction.
	Cuts []Cut
}

// Diff plans the transaction that makes the kernel's rules (have) those of
// want (pure). An addon whose primary is unknown keeps its dnat rules; a
// dnat rule replaced by one to another primary is a Cut. Rules that are
// not ours (no cacheplane user data) are deleted too: the table is ours
// alone.
func Diff(have []Have, want []Forward) Plan {
	wantUser := map[string]RuleSpec{}
	keepDNAT := map[string]bool{}
	for _, f := range want {
		if f.Valid() != nil {
			continue
		}
		if !f.Primary.IsValid() {
			keepDNAT[f.Addon] = true
		}
		for _, r := range Rules(f) {
			wantUser[r.Chain+"\x00"+r.User] = r
		}
	}
	var p Plan
	seen := map[string]bool{}
	oldDNAT := map[string]netip.AddrPort{} // addon → the primary of its dnat-out rule
	kept := 0
	for _, h := range have {
		k := h.Chain + "\x00" + h.User
		addon, kind := owner(h.User)
		if kind == kindDNATOut {
			oldDNAT[addon] = dnatTarget(h.User)
		}
		switch {
		case seen[k]: // a duplicate
			p.Del = append(p.Del, h)
		case wantUser[k].User != "":
			seen[k] = true
			kept++
		case keepDNAT[addon] && (kind == kindDNATOut || kind == kindDNATPre || kind == kindMasq):
			seen[k] = true
			kept++
		default:
			p.Del = append(p.Del, h)
		}
	}
	keys := make([]string, 0, len(wantUser))
	for k := range wantUser {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !seen[k] {
			p.Add = append(p.Add, wantUser[k])
		}
	}
	if kept == 0 && len(p.Add) == 0 {
		return Plan{DropTable: true}
	}
	for _, f := range want {
		from, had := oldDNAT[f.Addon]
		if f.Valid() != nil || !f.Primary.IsValid() || !had {
			continue
		}
		for _, r := range p.Add {
			if a, kind := owner(r.User); a == f.Addon && kind == kindDNATOut {
				p.Cuts = append(p.Cuts, Cut{Addon: f.Addon, Entry: f.Entry, From: from, Primary: f.Primary})
			}
		}
	}
	sort.Slice(p.Del, func(i, j int) bool { return p.Del[i].Handle < p.Del[j].Handle })
	return p
}
