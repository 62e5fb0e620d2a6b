package coordinator

import (
	"sync"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Member TLS (api.Settings.MemberTLS): the redis members and sentinels of
// such an addon listen on TLS only. Every client the coordinator makes of
// them goes through redisctl (MemberOptions, SentinelOptions), which asks
// the process's TLS table; memberTLSTable is this coordinator's answer,
// read from the FSM: the address of every redis member and sentinel of an
// addon with member TLS speaks TLS with the cluster CA and the addon id
// as the name its certificate carries.
type memberTLSTable struct {
	fsm *FSM

	mu    sync.Mutex
	index uint64
	built bool
	addrs map[string]*redisctl.TLS
	// byAddon keeps an addon's parsed CA across rebuilds.
	byAddon map[string]*redisctl.TLS
	caPEM   string
}

// lookup answers redisctl.TLSFor for addr, rebuilding the table when the
// FSM moved since (one pass over the addons; only clients being built ask).
func (t *memberTLSTable) lookup(addr string) *redisctl.TLS {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fsm.Read(func(st *State, index uint64) {
		if t.built && index == t.index {
			return
		}
		t.rebuild(st)
		t.index, t.built = index, true
	})
	return t.addrs[addr]
}

func (t *memberTLSTable) rebuild(st *State) {
	t.addrs = map[string]*redisctl.TLS{}
	if st.CA == nil {
		return
	}
	old := t.byAddon
	if st.CA.CertPEM != t.caPEM {
		old, t.caPEM = nil, st.CA.CertPEM
	}
	t.byAddon = map[string]*redisctl.TLS{}
	for _, a := range st.Addons {
		if !a.Settings.MemberTLS {
			continue
		}
		tt := old[a.ID]
		if tt == nil {
			var err error
			if tt, err = redisctl.NewTLS(st.CA.CertPEM, a.ID); err != nil {
				continue
			}
		}
		t.byAddon[a.ID] = tt
		for _, m := range a.Members {
			if m.Role == api.RoleRedis || m.Role == api.RoleSentinel {
				t.addrs[memberAddr(st, m)] = tt
			}
		}
	}
}
