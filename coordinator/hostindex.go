package coordinator

import (
	"net"
	"reflect"
	"sort"
	"sync"

	"github.com/cacheplane/cacheplane/api"
)

// The agents' blocking query at fleet size (10,000 hosts, 100,000 addons):
// a host's assignments are built from the addons with a member on it
// (hostAddons), not from every addon, and a watch waits until an entry
// that may change *its* host's assignments is applied (hostWatch), not
// any entry. Both are derived from the log as it is applied, never
// serialized: a restore rebuilds the index and wakes every watch.

// hostIndex is State's derived index of members by host.
type hostIndex struct {
	hostAddons map[string]map[string]bool // host id → ids of addons with a member on it
	addonHosts map[string][]string        // addon id → the hosts of its members
	addrs      map[string]int             // host address → how many hosts have it
	addrOf     map[string]string          // host id → the address counted in addrs
	// The addons by the address of their entrypoint (entrypointVIP asks
	// whether it is a host's): a host's new address wakes only them.
	epAddons map[string]map[string]bool // entrypoint address → addon ids
	epOf     map[string]string          // addon id → the address in epAddons
	// ha: the addons with three members or more, the only ones the
	// topology pass looks at (it walked every addon under the read lock).
	ha map[string]bool
}

func newHostIndex() hostIndex {
	return hostIndex{hostAddons: map[string]map[string]bool{}, addonHosts: map[string][]string{},
		addrs: map[string]int{}, addrOf: map[string]string{},
		epAddons: map[string]map[string]bool{}, epOf: map[string]string{}, ha: map[string]bool{}}
}

// reindexHosts rebuilds the host index from the maps.
func (s *State) reindexHosts() {
	s.hosts = newHostIndex()
	for id := range s.Addons {
		s.indexAddonHosts(id)
	}
	for id, h := range s.Hosts {
		s.countAddr(id, h.Address, true)
	}
}

// countAddr counts (or, with add false, stops counting) host id's address.
func (s *State) countAddr(id, addr string, add bool) {
	if add {
		s.hosts.addrs[addr]++
		s.hosts.addrOf[id] = addr
		return
	}
	if s.hosts.addrs[addr]--; s.hosts.addrs[addr] <= 0 {
		delete(s.hosts.addrs, addr)
	}
	delete(s.hosts.addrOf, id)
}

// indexAddonHosts brings the index up to date for one addon (created,
// changed or gone) and returns the hosts it was and is on.
func (s *State) indexAddonHosts(addonID string) (was, is []string) {
	was = s.hosts.addonHosts[addonID]
	for _, h := range was {
		if m := s.hosts.hostAddons[h]; m != nil {
			delete(m, addonID)
			if len(m) == 0 {
				delete(s.hosts.hostAddons, h)
			}
		}
	}
	delete(s.hosts.addonHosts, addonID)
	if ep, ok := s.hosts.epOf[addonID]; ok {
		delete(s.hosts.epAddons[ep], addonID)
		if len(s.hosts.epAddons[ep]) == 0 {
			delete(s.hosts.epAddons, ep)
		}
		delete(s.hosts.epOf, addonID)
	}
	delete(s.hosts.ha, addonID)
	a, ok := s.Addons[addonID]
	if !ok {
		return was, nil
	}
	if len(a.Members) >= 3 {
		s.hosts.ha[addonID] = true
	}
	if ep, _, err := net.SplitHostPort(a.Entrypoint); err == nil && ep != "" {
		set := s.hosts.epAddons[ep]
		if set == nil {
			set = map[string]bool{}
			s.hosts.epAddons[ep] = set
		}
		set[addonID] = true
		s.hosts.epOf[addonID] = ep
	}
	for _, m := range a.Members {
		if m.HostID == "" || contains(is, m.HostID) {
			continue
		}
		is = append(is, m.HostID)
		set := s.hosts.hostAddons[m.HostID]
		if set == nil {
			set = map[string]bool{}
			s.hosts.hostAddons[m.HostID] = set
		}
		set[addonID] = true
	}
	if len(is) > 0 {
		s.hosts.addonHosts[addonID] = is
	}
	return was, is
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// addonsOn returns the addons with a member on hostID, sorted by id.
func (s *State) addonsOn(hostID string) []api.Addon {
	set := s.hosts.hostAddons[hostID]
	out := make([]api.Addon, 0, len(set))
	for id := range set {
		out = append(out, s.Addons[id])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// haAddons are the ids of the addons with three members or more (HA
// addons, and starters while they become business), in no order.
func (s *State) haAddons() map[string]bool { return s.hosts.ha }

// isHostAddress says whether some host has addr as its address.
func (s *State) isHostAddress(addr string) bool { return s.hosts.addrs[addr] > 0 }

// hostWatch wakes the agents' blocking queries of the hosts whose
// assignments an applied entry may have changed. mod[host] is the last
// log index that may have changed the host's assignments; all is the same
// for every host (a catalog change, a restore, an entry this index does
// not know how to attribute).
type hostWatch struct {
	mu  sync.Mutex
	ch  map[string]chan struct{}
	mod map[string]uint64
	all uint64

	// Collected while a batch applies (under the FSM's lock), published
	// by flush.
	pending    map[string]bool
	pendingAll bool
}

func newHostWatch() *hostWatch {
	return &hostWatch{ch: map[string]chan struct{}{}, mod: map[string]uint64{}, pending: map[string]bool{}}
}

// touch marks hosts changed by the entry being applied.
func (w *hostWatch) touch(hosts ...string) {
	for _, h := range hosts {
		w.pending[h] = true
	}
}

// flush publishes what the batch ending at index changed and wakes the
// watches concerned. Called after the state is updated.
func (w *hostWatch) flush(index uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pendingAll {
		w.all = index
		for h, ch := range w.ch {
			close(ch)
			delete(w.ch, h)
		}
		w.mod = map[string]uint64{} // all covers them
	} else {
		for h := range w.pending {
			w.mod[h] = index
			if ch, ok := w.ch[h]; ok {
				close(ch)
				delete(w.ch, h)
			}
		}
	}
	w.pendingAll = false
	clear(w.pending)
}

// since returns the last index that may have changed hostID's assignments
// and a channel closed at the next such change.
func (w *hostWatch) since(hostID string) (uint64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch, ok := w.ch[hostID]
	if !ok {
		ch = make(chan struct{})
		w.ch[hostID] = ch
	}
	return max(w.mod[hostID], w.all), ch
}

// HostChanged returns the last log index that may have changed the
// assignments of hostID, and a channel closed when a later entry may.
// Take it before reading the state: a change applied after the read
// closes the channel.
func (f *FSM) HostChanged(hostID string) (uint64, <-chan struct{}) { return f.watch.since(hostID) }

// noteHosts records which hosts' assignments the entry of type t just
// applied (decoded into cmd) may have changed, keeping the host index up
// to date. Entries that never change an assignment are skipped; an entry
// naming an addon touches the hosts of its members before and after; one
// this function cannot attribute touches every host.
func (f *FSM) noteHosts(t CommandType, cmd any) {
	st, w := f.state, f.watch
	switch t {
	case CmdCoordinatorUpsert, CmdCoordinatorRemove, CmdCASet, CmdTokenCreate, CmdTokenUse, CmdCertRenew:
		return
	case CmdBackupsDeleted, CmdBackupsForget:
		return // backup records are in no assignment
	case CmdHostUpsert, CmdHostRemove:
		// An address is in other hosts' assignments (a member's address,
		// whether an entrypoint is a VIP): a new one touches every host.
		var id string
		switch c := cmd.(type) {
		case *HostUpsertCmd:
			id = c.Host.ID
		case *HostRemoveCmd:
			id = c.HostID
		}
		w.touch(id)
		old, had := st.hosts.addrOf[id]
		h, now := st.Hosts[id]
		if had == now && old == h.Address {
			return
		}
		// The host came, went or changed its address: recount it, and
		// wake the hosts whose assignments carry it — those of the addons
		// with a member on it (their members' addresses), and those of
		// the addons whose entrypoint is at the old or new address
		// (whether it is a VIP). A new host is in no one's assignments
		// yet: 10,000 registrations each recounting every address and
		// waking every watch were quadratic.
		var addons []map[string]bool
		if had {
			st.countAddr(id, old, false)
			addons = append(addons, st.hosts.epAddons[old])
		}
		if now {
			st.countAddr(id, h.Address, true)
			addons = append(addons, st.hosts.epAddons[h.Address])
		}
		for _, set := range append(addons, st.hosts.hostAddons[id]) {
			for aid := range set {
				w.touch(st.hosts.addonHosts[aid]...)
			}
		}
		return
	case CmdJobReport:
		if c, ok := cmd.(*JobReportCmd); ok {
			if j, ok := st.Jobs[c.Report.JobID]; ok && j.HostID != "" {
				w.touch(j.HostID)
				return
			}
		}
	case CmdOperationCancel:
		if c, ok := cmd.(*OperationCancelCmd); ok {
			if o, ok := st.Operations[c.OperationID]; ok {
				was, is := st.indexAddonHosts(o.AddonID)
				w.touch(was...)
				w.touch(is...)
				return
			}
		}
	}
	if id := addonIDOf(cmd); id != "" {
		was, is := st.indexAddonHosts(id)
		w.touch(was...)
		w.touch(is...)
		return
	}
	// Members change only through entries that name their addon: an entry
	// that names none (the catalog) changes no index, but may change any
	// host's assignments.
	w.pendingAll = true
}

// addonIDOf finds the addon an entry is about: its AddonID, Addon.ID or
// Operation.AddonID field.
func addonIDOf(cmd any) string {
	v := reflect.ValueOf(cmd)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return ""
	}
	if f := v.FieldByName("AddonID"); f.IsValid() && f.Kind() == reflect.String && f.String() != "" {
		return f.String()
	}
	for _, name := range []string{"Addon", "Operation"} {
		f := v.FieldByName(name)
		if !f.IsValid() || f.Kind() != reflect.Struct {
			continue
		}
		inner := "AddonID"
		if name == "Addon" {
			inner = "ID"
		}
		if g := f.FieldByName(inner); g.IsValid() && g.Kind() == reflect.String && g.String() != "" {
			return g.String()
		}
	}
	return ""
}
