package kernelpath

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/ti-mo/conntrack"
)

// Kernel is the netlink edge: one agent's table and the conntrack
// entries it forwarded. Methods are safe for concurrent use (one
// transaction at a time).
type Kernel struct {
	mu    sync.Mutex
	table *nftables.Table
}

// New returns the Kernel of the table named table (TableName).
func New(table string) *Kernel {
	return &Kernel{table: &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}}
}

// Table is the table's name.
func (k *Kernel) Table() string { return k.table.Name }

// Result is what Apply did.
type Result struct {
	Added, Deleted int
	Dropped        bool // the table was deleted
	// Cuts are the primary changes committed: the caller closes the
	// demoted nodes' connections (CutStale, after closing them on the
	// node itself when it can).
	Cuts []Cut
}

// Apply makes the table hold the rules of want: it reads the table's rules,
// plans (Diff) and commits the plan in one nftables transaction, and
// returns the primary changes committed (Result.Cuts). ctx bounds nothing
// netlink itself waits on (a local socket); it is checked before the
// transaction.
func (k *Kernel) Apply(ctx context.Context, want []Forward) (Result, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var res Result
	c, err := nftables.New()
	if err != nil {
		return res, fmt.Errorf("nftables: open netlink: %w", err)
	}
	defer c.CloseLasting() //nolint:errcheck // a non-lasting conn: nothing to close
	have, exists, err := k.rules(c)
	rebuild := false
	if err != nil {
		if !exists {
			return res, err
		}
		// A rule this library cannot read back (not one of ours): the
		// table is rebuilt from want in the one transaction instead.
		have, rebuild = nil, true
	}
	p := Diff(have, want)
	if (p.DropTable && !exists) || (!p.DropTable && len(p.Del) == 0 && len(p.Add) == 0) {
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if p.DropTable || rebuild {
		c.DelTable(k.table)
	}
	if p.DropTable {
		if err := c.Flush(); err != nil {
			return res, fmt.Errorf("nftables: delete table %s: %w", k.table.Name, err)
		}
		res.Dropped = true
		return res, nil
	}
	c.AddTable(k.table)
	for _, ch := range chains {
		c.AddChain(&nftables.Chain{Name: ch.Name, Table: k.table, Type: ch.Type, Hooknum: ch.Hooknum, Priority: ch.Priority})
	}
	for _, h := range p.Del {
		if err := c.DelRule(&nftables.Rule{Table: k.table, Chain: &nftables.Chain{Name: h.Chain, Table: k.table}, Handle: h.Handle}); err != nil {
			return res, fmt.Errorf("nftables: delete rule %q: %w", h.User, err)
		}
	}
	for _, r := range p.Add {
		c.AddRule(&nftables.Rule{Table: k.table, Chain: &nftables.Chain{Name: r.Chain, Table: k.table}, Exprs: r.Exprs, UserData: []byte(r.User)})
	}
	if err := c.Flush(); err != nil {
		return res, fmt.Errorf("nftables: table %s: transaction (%d rules deleted, %d added): %w", k.table.Name, len(p.Del), len(p.Add), err)
	}
	res.Added, res.Deleted, res.Cuts = len(p.Add), len(p.Del), p.Cuts
	return res, nil
}

// rules lists the table's rules and whether the table exists.
func (k *Kernel) rules(c *nftables.Conn) ([]Have, bool, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, false, fmt.Errorf("nftables: list tables: %w", err)
	}
	found := false
	for _, t := range tables {
		if t.Name == k.table.Name {
			found = true
		}
	}
	if !found {
		return nil, false, nil
	}
	chs, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, true, fmt.Errorf("nftables: list chains: %w", err)
	}
	var out []Have
	for _, ch := range chs {
		if ch.Table == nil || ch.Table.Name != k.table.Name {
			continue
		}
		rs, err := c.GetRules(k.table, ch)
		if err != nil {
			return nil, true, fmt.Errorf("nftables: rules of %s/%s: %w", k.table.Name, ch.Name, err)
		}
		for _, r := range rs {
			out = append(out, Have{Chain: ch.Name, User: string(r.UserData), Handle: r.Handle})
		}
	}
	return out, true, nil
}

// Drop deletes the table (nothing when there is none).
func (k *Kernel) Drop() error {
	_, err := k.Apply(context.Background(), nil)
	return err
}

// CutStale deletes the conntrack entries that were forwarded (DNAT) to
// cut.Entry and whose reply does not come from cut.Primary, and returns
// how many it deleted.
func CutStale(cut Cut) (int, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack: open netlink: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack: dump: %w", err)
	}
	n := 0
	var errs []error
	entryIP := cut.Entry.Addr().Unmap()
	for _, f := range flows {
		if !stale(f, entryIP, cut.Entry.Port(), cut.Primary) {
			continue
		}
		if err := c.Delete(f); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("conntrack: %d entries not deleted: %w", len(errs), errs[0])
	}
	return n, nil
}

// stale: f was forwarded to entry (ip:port) and its reply comes from
// elsewhere than primary.
func stale(f conntrack.Flow, ip netip.Addr, port uint16, primary netip.AddrPort) bool {
	if !f.Status.DstNAT() || f.TupleOrig.Proto.Protocol != 6 {
		return false
	}
	if f.TupleOrig.IP.DestinationAddress.Unmap() != ip || f.TupleOrig.Proto.DestinationPort != port {
		return false
	}
	from := netip.AddrPortFrom(f.TupleReply.IP.SourceAddress.Unmap(), f.TupleReply.Proto.SourcePort)
	return from != netip.AddrPortFrom(primary.Addr().Unmap(), primary.Port())
}
