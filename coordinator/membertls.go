package coordinator

import (
	"crypto/x509"
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
	// pool is the cluster CA's, parsed once per CA (caPEM): every addon's
	// certificate is signed by it, only the name differs.
	pool  *x509.CertPool
	caPEM string
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
	if st.CA.CertPEM != t.caPEM {
		t.pool, t.caPEM = x509.NewCertPool(), st.CA.CertPEM
		if !t.pool.AppendCertsFromPEM([]byte(t.caPEM)) {
			t.pool = nil
		}
	}
	if t.pool == nil {
		return
	}
	for _, a := range st.Addons {
		if !a.Settings.MemberTLS {
			continue
		}
		tt := &redisctl.TLS{CA: t.pool, ServerName: a.ID}
		for _, m := range a.Members {
			if m.Role == api.RoleRedis || m.Role == api.RoleSentinel {
				t.addrs[memberAddr(st, m)] = tt
			}
		}
	}
}
