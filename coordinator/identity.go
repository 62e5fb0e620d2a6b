package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// Daemon identities (issue 13, part 3): the cluster CA lives in the FSM
// (replicated to coordinators only); join tokens are recorded by the hash
// of their secret, their expiry and whether they were used; each host's
// agent certificate is recorded by serial, so that hosts-remove (or a
// renewal) revokes the one before.

// JoinToken is a join token as the FSM keeps it: never its secret.
type JoinToken struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	Name       string    `json:"name,omitempty"` // the only name that may use it, if set
	SecretHash string    `json:"secret_hash"`
	Expires    time.Time `json:"expires"`
	Used       bool      `json:"used,omitempty"`
	UsedBy     string    `json:"used_by,omitempty"`
	UsedAt     time.Time `json:"used_at,omitempty"`
}

// HostCert is the certificate a host's agent holds now.
type HostCert struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// CASetCmd records the cluster CA; the first one recorded stays.
type CASetCmd struct {
	CA identity.CA `json:"ca"`
}

// TokenCreateCmd records a join token; tokens expired or used before At
// (less a day) are forgotten.
type TokenCreateCmd struct {
	Token JoinToken `json:"token"`
	At    time.Time `json:"at"`
}

// TokenUseCmd consumes a join token for Name (checked: exists, secret,
// kind, name, not used, not expired at At) and, for an agent, records its
// certificate's serial.
type TokenUseCmd struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_hash"`
	Kind       string    `json:"kind"`
	Name       string    `json:"name"`
	Serial     string    `json:"serial"`
	NotAfter   time.Time `json:"not_after"`
	At         time.Time `json:"at"`
}

// CertRenewCmd replaces a host's certificate serial (the old one must be
// the one recorded).
type CertRenewCmd struct {
	HostID    string    `json:"host_id"`
	OldSerial string    `json:"old_serial"`
	Serial    string    `json:"serial"`
	NotAfter  time.Time `json:"not_after"`
}

// HostRemoveCmd forgets a host and revokes its certificate. Refused while
// members are placed on it.
type HostRemoveCmd struct {
	HostID string `json:"host_id"`
}

func (f *FSM) applyCASet(c CASetCmd) any {
	if f.state.CA == nil {
		ca := c.CA
		f.state.CA = &ca
	}
	return *f.state.CA
}

func (f *FSM) applyTokenCreate(c TokenCreateCmd) any {
	if f.state.JoinTokens == nil {
		f.state.JoinTokens = map[string]JoinToken{}
	}
	for id, t := range f.state.JoinTokens {
		if t.Expires.Before(c.At.Add(-24 * time.Hour)) {
			delete(f.state.JoinTokens, id)
		}
	}
	if _, ok := f.state.JoinTokens[c.Token.ID]; ok {
		return fmt.Errorf("%w: join token %s exists", api.ErrConflict, c.Token.ID)
	}
	f.state.JoinTokens[c.Token.ID] = c.Token
	return nil
}

func (f *FSM) applyTokenUse(c TokenUseCmd) any {
	t, ok := f.state.JoinTokens[c.ID]
	switch {
	case !ok || t.SecretHash != c.SecretHash:
		return fmt.Errorf("%w: join token %s is unknown (or its secret is wrong): ask a new one with cacheplane hosts-token", api.ErrForbidden, c.ID)
	case t.Used:
		return fmt.Errorf("%w: join token %s was already used (by %s at %s): a token joins once; ask a new one with cacheplane hosts-token",
			api.ErrForbidden, c.ID, t.UsedBy, t.UsedAt.Format(time.RFC3339))
	case !c.At.Before(t.Expires):
		return fmt.Errorf("%w: join token %s expired at %s: ask a new one with cacheplane hosts-token", api.ErrForbidden, c.ID, t.Expires.Format(time.RFC3339))
	case t.Kind != c.Kind:
		return fmt.Errorf("%w: join token %s is for a %s, not a %s", api.ErrForbidden, c.ID, t.Kind, c.Kind)
	case t.Name != "" && t.Name != c.Name:
		return fmt.Errorf("%w: join token %s is for %s, not %s", api.ErrForbidden, c.ID, t.Name, c.Name)
	}
	t.Used, t.UsedBy, t.UsedAt = true, c.Name, c.At
	f.state.JoinTokens[c.ID] = t
	if c.Kind == api.TokenAgent {
		if f.state.HostCerts == nil {
			f.state.HostCerts = map[string]HostCert{}
		}
		f.state.HostCerts[c.Name] = HostCert{Serial: c.Serial, NotAfter: c.NotAfter}
	}
	return nil
}

func (f *FSM) applyCertRenew(c CertRenewCmd) any {
	cur, ok := f.state.HostCerts[c.HostID]
	if !ok || cur.Serial != c.OldSerial {
		return fmt.Errorf("%w: the certificate of host %s is revoked", api.ErrForbidden, c.HostID)
	}
	f.state.HostCerts[c.HostID] = HostCert{Serial: c.Serial, NotAfter: c.NotAfter}
	return nil
}

func (f *FSM) applyHostRemove(c HostRemoveCmd) any {
	_, known := f.state.Hosts[c.HostID]
	_, cert := f.state.HostCerts[c.HostID]
	if !known && !cert {
		return fmt.Errorf("%w: no host %s (see: cacheplane hosts)", api.ErrNotFound, c.HostID)
	}
	for _, a := range sortedAddons(f.state.Addons) {
		for _, m := range a.Members {
			if m.HostID == c.HostID {
				return fmt.Errorf("%w: host %s still runs %s of %s: drain it first (cacheplane hosts-drain %s)",
					api.ErrConflict, c.HostID, m.ID, a.ID, c.HostID)
			}
		}
	}
	delete(f.state.Hosts, c.HostID)
	delete(f.state.HostCerts, c.HostID)
	return nil
}

// caller is who made a request: the admin socket's user, or the holder
// of a certificate on the peer API.
type caller struct {
	admin bool
	peer  identity.Peer
	// forwardedAgent: a member forwarded this agent's call (its
	// certificate was checked against the CA by that member).
	forwardedAgent bool
	// plain: a plain HTTP request on the peer API of a member not
	// secured yet (older members and agents: peerplain.go).
	plain bool
}

type callerKey struct{}

func callerOf(r *http.Request) caller {
	c, ok := r.Context().Value(callerKey{}).(caller)
	if !ok {
		return caller{admin: true}
	}
	return c
}

func (c caller) isAgent() bool { return !c.admin && c.peer.Kind == identity.KindAgent }

// Headers a member sets when it forwards an agent's call to the leader.
const (
	headerAgentHost   = "X-Cacheplane-Agent-Host"
	headerAgentSerial = "X-Cacheplane-Agent-Serial"
)

// adminHandler marks every request of the admin socket as the admin's.
func adminHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{admin: true})))
	})
}

// peerHandler authenticates the peer API's caller by its (handshake
// verified) certificate and authorizes the route (identity.Authorize). A
// plain HTTP request (only a member not secured yet accepts one) is
// checked by its cluster token and identity.AuthorizePlain.
func (s *Server) peerHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			s.servePlain(h, w, r)
			return
		}
		var c caller
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			p, err := identity.PeerOf(r.TLS.PeerCertificates[0])
			if err != nil {
				writeError(w, fmt.Errorf("%w: %v", api.ErrUnauthorized, err))
				return
			}
			c.peer = p
		}
		if err := identity.Authorize(c.peer, r.Method, r.URL.Path); err != nil {
			if errors.Is(err, identity.ErrForbidden) {
				writeError(w, fmt.Errorf("%w: %v", api.ErrForbidden, err))
			} else {
				writeError(w, fmt.Errorf("%w: %v", api.ErrUnauthorized, err))
			}
			return
		}
		if c.peer.Kind == identity.KindMember {
			if host := r.Header.Get(headerAgentHost); host != "" {
				c = caller{peer: identity.Peer{Kind: identity.KindAgent, Name: host, Serial: r.Header.Get(headerAgentSerial)}, forwardedAgent: true}
			}
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

// servePlain serves a plain HTTP request of an older member or agent
// while this member is not secured; once it is (a connection opened
// before), the connection is closed unanswered.
func (s *Server) servePlain(h http.Handler, w http.ResponseWriter, r *http.Request) {
	if !s.store.Unsecured() {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		w.Header().Set("Connection", "close")
		writeError(w, fmt.Errorf("%w: this coordinator takes only mutual TLS with a certificate of this cluster", api.ErrUnauthorized))
		return
	}
	if !plainTokenOK(r, s.cfg.ClusterToken) {
		writeError(w, fmt.Errorf("%w: missing or wrong cluster token", api.ErrUnauthorized))
		return
	}
	if err := identity.AuthorizePlain(r.Method, r.URL.Path, r.Header.Get(headerForwarded) != ""); err != nil {
		writeError(w, fmt.Errorf("%w: %v", api.ErrUnauthorized, err))
		return
	}
	r.Header.Del(headerAgentHost)
	r.Header.Del(headerAgentSerial)
	h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{plain: true})))
}

// checkAgent refuses an agent whose certificate is not the one recorded
// for its host (removed host, replaced certificate).
func (s *Server) checkAgent(c caller) error {
	if !c.isAgent() {
		return nil
	}
	var (
		hc HostCert
		ok bool
	)
	s.store.FSM().Read(func(st *State, _ uint64) { hc, ok = st.HostCerts[c.peer.Name] })
	if !ok {
		return fmt.Errorf("%w: host %s is not part of this fleet any more (removed): its certificate is revoked; join it again with a new token (cacheplane hosts-token)", api.ErrForbidden, c.peer.Name)
	}
	if hc.Serial != c.peer.Serial {
		return fmt.Errorf("%w: this certificate of host %s (serial %s) was replaced or revoked", api.ErrForbidden, c.peer.Name, c.peer.Serial)
	}
	return nil
}

// checkHost refuses a call for hostID by an agent of another host.
func checkHost(r *http.Request, hostID string) error {
	if err := identity.CheckHost(callerOf(r).peer, hostID); err != nil && callerOf(r).isAgent() {
		return fmt.Errorf("%w: %v", api.ErrForbidden, err)
	}
	return nil
}

// ensureCA records a new cluster CA when the FSM has none (the
// bootstrapping leader, or cluster-secure on a cluster made before
// identities); it returns the CA in force and whether it made it.
func ensureCA(ctx context.Context, store interface {
	FSM() *FSM
	Apply(context.Context, CommandType, any) (any, error)
}, now time.Time) (identity.CA, bool, error) {
	var cur *identity.CA
	store.FSM().Read(func(st *State, _ uint64) { cur = st.CA })
	if cur != nil {
		return *cur, false, nil
	}
	ca, err := identity.NewCA(now)
	if err != nil {
		return identity.CA{}, false, err
	}
	res, err := store.Apply(ctx, CmdCASet, CASetCmd{CA: ca})
	if err != nil {
		return identity.CA{}, false, fmt.Errorf("record the cluster CA: %w", err)
	}
	got := res.(identity.CA)
	return got, got.CertPEM == ca.CertPEM, nil
}

func (s *Server) clusterCA() (identity.CA, error) {
	var cur *identity.CA
	s.store.FSM().Read(func(st *State, _ uint64) { cur = st.CA })
	if cur == nil {
		return identity.CA{}, fmt.Errorf("%w: the cluster has no CA yet (a new leader makes it; on a cluster made before identities run: cacheplane cluster-secure)", api.ErrNoLeader)
	}
	return *cur, nil
}

// handleToken makes a join token (hosts-token, members-token).
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) error {
	var req api.TokenRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	ca, err := s.clusterCA()
	if err != nil {
		return err
	}
	hash, err := ca.Hash()
	if err != nil {
		return err
	}
	tok, err := identity.NewToken(hash)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	jt := JoinToken{ID: tok.ID, Kind: req.Kind, Name: req.Name, SecretHash: identity.HashSecret(tok.Secret), Expires: now.Add(time.Duration(req.TTL))}
	if _, err := s.store.Apply(r.Context(), CmdTokenCreate, TokenCreateCmd{Token: jt, At: now}); err != nil {
		return err
	}
	s.log.Info("join token created", "token_id", tok.ID, "kind", req.Kind, "name", req.Name, "expires", jt.Expires)
	writeJSON(w, http.StatusCreated, api.TokenResponse{Token: tok.String(), ID: tok.ID, Kind: req.Kind, Name: req.Name, Expires: jt.Expires, CAHash: hash})
	return nil
}

// handleJoinIdentity signs a newcomer's certificate for a join token: the
// token is checked and consumed by one Raft entry.
func (s *Server) handleJoinIdentity(w http.ResponseWriter, r *http.Request) error {
	var req api.JoinIdentityRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	ca, err := s.clusterCA()
	if err != nil {
		return err
	}
	serial, err := identity.NewSerial()
	if err != nil {
		return err
	}
	now := s.now().UTC()
	ttl := time.Duration(s.cfg.AgentCertTTL)
	kind := identity.KindAgent
	if req.Kind == api.TokenMember {
		ttl, kind = time.Duration(s.cfg.MemberCertTTL), identity.KindMember
	}
	notAfter := now.Add(ttl)
	cert, err := ca.Sign(identity.Request{CSRPEM: req.CSR, Kind: kind, Name: req.Name, Serial: serial, NotBefore: now.Add(-time.Minute), NotAfter: notAfter})
	if err != nil {
		return api.Invalidf("%v", err)
	}
	if _, err := s.store.Apply(r.Context(), CmdTokenUse, TokenUseCmd{ID: req.TokenID, SecretHash: identity.HashSecret(req.Secret),
		Kind: req.Kind, Name: req.Name, Serial: serial, NotAfter: notAfter, At: now}); err != nil {
		s.log.Warn("join refused", "token_id", req.TokenID, "kind", req.Kind, "name", req.Name, "err", api.Message(err))
		return err
	}
	s.log.Info("certificate issued for a join token", "token_id", req.TokenID, "kind", kind, "name", req.Name, "serial", serial, "not_after", notAfter)
	writeJSON(w, http.StatusOK, api.IdentityResponse{Cert: cert, CA: ca.CertPEM})
	return nil
}

// handleRenew signs a new certificate for an agent that shows its current
// one; the old serial is revoked by the same Raft entry.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r)
	if !c.isAgent() {
		return fmt.Errorf("%w: only an agent renews its certificate here", api.ErrForbidden)
	}
	var req api.RenewRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	ca, err := s.clusterCA()
	if err != nil {
		return err
	}
	serial, err := identity.NewSerial()
	if err != nil {
		return err
	}
	now := s.now().UTC()
	notAfter := now.Add(time.Duration(s.cfg.AgentCertTTL))
	cert, err := ca.Sign(identity.Request{CSRPEM: req.CSR, Kind: identity.KindAgent, Name: c.peer.Name, Serial: serial, NotBefore: now.Add(-time.Minute), NotAfter: notAfter})
	if err != nil {
		return api.Invalidf("%v", err)
	}
	if _, err := s.store.Apply(r.Context(), CmdCertRenew, CertRenewCmd{HostID: c.peer.Name, OldSerial: c.peer.Serial, Serial: serial, NotAfter: notAfter}); err != nil {
		return err
	}
	s.log.Info("agent certificate renewed", "host", c.peer.Name, "serial", serial, "not_after", notAfter)
	writeJSON(w, http.StatusOK, api.IdentityResponse{Cert: cert, CA: ca.CertPEM})
	return nil
}

// handleHostRemove forgets a host with no members and revokes its
// certificate.
func (s *Server) handleHostRemove(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := api.ValidateMemberID("host", id); err != nil {
		return err
	}
	if _, err := s.store.Apply(r.Context(), CmdHostRemove, HostRemoveCmd{HostID: id}); err != nil {
		return err
	}
	s.obs.forget(id)
	s.log.Info("host removed; its certificate is revoked", "host", id)
	writeJSON(w, http.StatusOK, map[string]string{"message": "Host " + id + " removed; its agent's certificate is revoked"})
	return nil
}

// handleSecure makes sure the cluster has its CA (cluster-secure).
func (s *Server) handleSecure(w http.ResponseWriter, r *http.Request) error {
	ca, created, err := ensureCA(r.Context(), s.store, s.now())
	if err != nil {
		return err
	}
	hash, err := ca.Hash()
	if err != nil {
		return err
	}
	msg := "The cluster CA is in place (" + hash + "). Every coordinator writes its member certificate within seconds; " +
		"restart the coordinators one at a time (Raft then runs over TLS), then join each agent again: " +
		"cacheplane hosts-token HOST, and start its agent with --join-token."
	writeJSON(w, http.StatusOK, api.SecureResponse{CAHash: hash, Created: created, Message: msg})
	return nil
}

// memberIdentity keeps this coordinator's member certificate: issued
// (signed with the FSM's CA, which every member holds) when it has none,
// when the cluster's CA is another, or when two thirds of its life have
// passed; written to <data_dir>/tls (0600) and put in use at once.
type memberIdentity struct {
	id     string
	dir    string
	ttl    time.Duration
	holder *identity.Holder
	fsm    *FSM
	log    *slog.Logger
	now    func() time.Time
}

func identityDir(cfg Config) string { return filepath.Join(cfg.DataDir, "tls") }

// load puts the certificate on disk in use; false when there is none.
func (m *memberIdentity) load() (bool, error) {
	key, cert, ca, err := identity.Load(m.dir)
	if errors.Is(err, identity.ErrNoIdentity) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cur, err := identity.Parse(key, cert, ca)
	if err != nil {
		return false, err
	}
	m.holder.Set(cur)
	return true, nil
}

func (m *memberIdentity) run(ctx context.Context) {
	for {
		ch := m.fsm.Changed()
		if err := m.check(); err != nil {
			m.log.Error("member certificate", "err", err)
		}
		t := time.NewTimer(time.Minute)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

func (m *memberIdentity) check() error {
	var ca *identity.CA
	m.fsm.Read(func(st *State, _ uint64) { ca = st.CA })
	if ca == nil {
		return nil
	}
	hash, err := ca.Hash()
	if err != nil {
		return err
	}
	now := m.now()
	cur := m.holder.Get()
	if cur != nil && cur.CAHash == hash && !identity.RenewDue(cur.Leaf.NotBefore, cur.Leaf.NotAfter, now) {
		return nil
	}
	key, csr, err := identity.NewKey(m.id)
	if err != nil {
		return err
	}
	serial, err := identity.NewSerial()
	if err != nil {
		return err
	}
	cert, err := ca.Sign(identity.Request{CSRPEM: csr, Kind: identity.KindMember, Name: m.id, Serial: serial, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(m.ttl)})
	if err != nil {
		return err
	}
	next, err := identity.Parse(key, cert, ca.CertPEM)
	if err != nil {
		return err
	}
	if err := identity.Save(m.dir, key, cert, ca.CertPEM); err != nil {
		return err
	}
	m.holder.Set(next)
	m.log.Info("member certificate issued", "serial", serial, "not_after", next.Leaf.NotAfter, "ca", hash)
	return nil
}
