package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/scheduler"
)

// Headers used between coordinators.
const (
	headerForwarded = "X-Cacheplane-Forwarded"
	headerServedBy  = "X-Cacheplane-Served-By"
)

// Server serves the admin API (unix socket) and the peer API (TLS). Both
// carry the same routes; on the peer API peerHandler authenticates the
// caller's certificate and authorizes the route.
type Server struct {
	cfg   Config
	store *Store
	log   *slog.Logger
	now   func() time.Time
	fwd   *http.Transport
	obs   *observed
	stats *statsHistory
	relay *figuresRelay
	// relayCtx ends when the coordinator closes (stops the relay workers).
	relayCtx context.Context
	// backups: the store and keyring (downloads, the agents' jobs).
	backups *backupEnv
	// holder is this member's certificate (forwarding to the leader).
	holder *identity.Holder
	// pre is addons-add's pre-flight placement check (preflight.go).
	pre preflight
}

func newServer(cfg Config, store *Store, obs *observed, stats *statsHistory, log *slog.Logger, holder *identity.Holder) *Server {
	return &Server{
		cfg: cfg, store: store, log: log, now: time.Now, obs: obs, stats: stats, holder: holder,
		fwd: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			TLSClientConfig:       holder.ClientConfig(),
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: maxWait + 15*time.Second, // blocking queries
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       30 * time.Second,
			// HTTP/2 to the leader's TLS peer port, at most forwardConns
			// connections: the agents' requests and blocking watches a
			// follower forwards share them (peerStreams each) instead of
			// a connection and TLS handshake per request in flight. After
			// a leader change every agent still talks to the member it
			// knew; at 10,000 hosts each follower dialled the new leader
			// thousands of times at once, the handshakes timed out (5 s)
			// and were dialled again, and the leader's accept queue
			// overflowed (dial i/o timeouts), with no end to it.
			ForceAttemptHTTP2: true,
			MaxConnsPerHost:   forwardConns,
		},
	}
}

// forwardConns bounds a follower's connections to the leader's peer API;
// peerStreams is the HTTP/2 streams a peer connection may carry at once
// (http.Server's default is 250): together, 8 × 4,096 requests in flight
// forwarded, more than the agents' watches and heartbeats of 10,000 hosts.
const (
	forwardConns = 8
	peerStreams  = 4096
)

// Handler returns the API routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", s.handleHealth)
	mux.HandleFunc("GET /v1/cluster", s.handleClusterStatus)
	mux.HandleFunc("POST /v1/cluster/join", s.handleJoinPeer)
	mux.Handle("POST /v1/cluster/members", s.write(s.handleAddMember))
	mux.Handle("DELETE /v1/cluster/members/{id}", s.write(s.handleRemoveMember))
	// Admin socket only (refused elsewhere); answers without a leader.
	mux.HandleFunc("POST /v1/cluster/recover", s.handleRecover)
	mux.Handle("GET /v1/plans", s.read(s.handlePlans))
	mux.Handle("GET /v1/engines", s.read(s.handleEngines))
	mux.Handle("GET /v1/engines/paths", s.read(s.handleEnginePaths))
	mux.Handle("GET /v1/hosts", s.read(s.handleHosts))
	mux.Handle("GET /v1/addons", s.read(s.handleAddons))
	mux.Handle("GET /v1/addons/{id}", s.read(s.handleAddon))
	mux.Handle("GET /v1/stats", s.read(s.handleAddonStats))
	mux.Handle("POST /v1/settings", s.write(s.handleSettings))
	mux.Handle("POST /v1/hosts/{id}/drain", s.write(s.handleDrain(true)))
	mux.Handle("POST /v1/hosts/{id}/undrain", s.write(s.handleDrain(false)))
	mux.Handle("POST /v1/addons", s.write(s.handleAddonCreate))
	mux.Handle("DELETE /v1/addons/{id}", s.write(s.handleAddonRemove))
	mux.Handle("POST /v1/addons/{id}/plan", s.write(s.handlePlanChange))
	mux.Handle("POST /v1/addons/{id}/password", s.write(s.handleRotatePassword)) // rotate.go
	mux.Handle("POST /v1/addons/{id}/engine", s.write(s.handleEngineUpgrade))
	mux.Handle("GET /v1/env", s.read(s.handleEnv))
	mux.Handle("GET /v1/addons/ca", s.read(s.handleAddonCA)) // addoncert.go
	mux.Handle("GET /v1/operations", s.read(s.handleOperations))
	mux.Handle("POST /v1/operations/{id}/cancel", s.write(s.handleOperationCancel))
	mux.Handle("POST /v1/agent/register", s.write(s.handleRegister))
	mux.Handle("POST /v1/agent/heartbeat", s.write(s.handleHeartbeat))
	mux.Handle("POST /v1/agent/alive", s.write(s.handleAlive))
	mux.Handle("GET /v1/agent/assignments", s.read(s.handleAssignments))
	mux.Handle("POST /v1/agent/jobs", s.write(s.handleJobReport))
	mux.Handle("POST /v1/agent/renew", s.write(s.handleRenew))
	mux.Handle("POST /v1/join", s.write(s.handleJoinIdentity))
	mux.Handle("POST /v1/tokens", s.write(s.handleToken))
	mux.Handle("DELETE /v1/hosts/{id}", s.write(s.handleHostRemove))
	mux.Handle("POST /v1/cluster/secure", s.write(s.handleSecure))
	mux.Handle("GET /v1/backups", s.read(s.handleBackups))
	mux.Handle("POST /v1/backups", s.write(s.handleBackupCreate))
	mux.Handle("POST /v1/backups/{id}/restore", s.write(s.handleBackupRestore))
	// Served here, from this member's FSM and the store: never forwarded.
	mux.HandleFunc("GET /v1/backups/{id}/download", s.handleBackupDownload)
	s.dashboardRoutes(mux) // dashboard.go
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("%w: no such endpoint %s %s", api.ErrNotFound, r.Method, r.URL.Path))
	})
	return mux
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// write runs h on the leader; a follower forwards the request.
func (s *Server) write(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.store.IsLeader() {
			s.forward(w, r)
			return
		}
		w.Header().Set(headerServedBy, s.cfg.ID)
		if err := s.checkAgent(callerOf(r)); err != nil {
			writeError(w, err)
			return
		}
		if err := h(w, r); err != nil {
			writeError(w, err)
		}
	})
}

// read runs h on a caught-up leader (consistent) or, with ?stale=true, on
// this member's own state.
func (s *Server) read(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("stale") != "true" {
			if !s.store.IsLeader() {
				s.forward(w, r)
				return
			}
			if err := s.store.ConsistentRead(r.Context()); err != nil {
				writeError(w, err)
				return
			}
		}
		w.Header().Set(headerServedBy, s.cfg.ID)
		if err := s.checkAgent(callerOf(r)); err != nil {
			writeError(w, err)
			return
		}
		if err := h(w, r); err != nil {
			writeError(w, err)
		}
	})
}

// forward proxies a request to the leader's peer API.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(headerForwarded) != "" {
		writeError(w, fmt.Errorf("%w: %s is not the leader (forwarded request not forwarded again)", api.ErrNotLeader, s.cfg.ID))
		return
	}
	leaderID, addr := s.store.Leader()
	if leaderID == "" || addr == "" || leaderID == s.cfg.ID {
		writeError(w, fmt.Errorf("%w: no coordinator leader is elected right now; retry in a moment", api.ErrNoLeader))
		return
	}
	// Over mutual TLS; in plain HTTP with the cluster token while this
	// member is not secured (a cluster made before identities).
	target := &url.URL{Scheme: "https", Host: addr}
	plain := s.store.Unsecured()
	if plain {
		target.Scheme = "http"
	}
	c := callerOf(r)
	p := &httputil.ReverseProxy{
		Transport: s.fwd,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(headerForwarded, s.cfg.ID)
			pr.Out.Header.Del("Authorization")
			if plain && s.cfg.ClusterToken != "" {
				pr.Out.Header.Set("Authorization", "Bearer "+s.cfg.ClusterToken)
			}
			pr.Out.Header.Del(headerAgentHost)
			pr.Out.Header.Del(headerAgentSerial)
			if c.isAgent() {
				// The leader checks this agent's serial; this member
				// checked its certificate against the CA.
				pr.Out.Header.Set(headerAgentHost, c.peer.Name)
				pr.Out.Header.Set(headerAgentSerial, c.peer.Serial)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.log.Warn("forward to leader failed", "leader", leaderID, "path", r.URL.Path, "err", err)
			writeError(w, fmt.Errorf("%w: the leader %s did not answer (%v); a write may or may not have been applied: retry it (requests with a request id are idempotent)",
				api.ErrNoLeader, leaderID, err))
		},
	}
	p.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, api.HTTPStatus(err), api.ErrorBody{Error: api.Message(err), Code: api.ErrorCode(err)})
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"id": s.cfg.ID, "leader": s.store.IsLeader()})
}

func (s *Server) handleClusterStatus(w http.ResponseWriter, _ *http.Request) {
	st, err := s.store.Status()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// handleJoinPeer makes this member join the cluster of the peer with a
// member join token: first its member certificate (TLS, the CA checked by
// the token's hash; the token consumed), kept in <data_dir>/tls, then,
// with it, its addition as a voter.
func (s *Server) handleJoinPeer(w http.ResponseWriter, r *http.Request) {
	var req api.JoinPeerRequest
	if err := api.Decode(r.Body, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, err)
		return
	}
	tok, err := identity.ParseToken(req.Token)
	if err != nil {
		writeError(w, api.Invalidf("%v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	unreachable := func(err error) error {
		var re *api.RemoteError
		if errors.As(err, &re) {
			return err
		}
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return fmt.Errorf("%w: cannot reach coordinator at %s: %v", api.ErrUnreachable, req.Peer, unwrapSyscall(err))
	}
	if cur := s.holder.Get(); cur == nil || cur.CAHash != tok.CAHash {
		key, csr, err := identity.NewKey(s.cfg.ID)
		if err != nil {
			writeError(w, err)
			return
		}
		var ca *x509.Certificate
		first := api.NewTLSPeerClient(req.Peer, identity.FirstContactConfig(tok.CAHash, &ca))
		first.RetryFor = 5 * time.Second
		defer first.Close()
		got, err := first.JoinIdentity(ctx, api.JoinIdentityRequest{TokenID: tok.ID, Secret: tok.Secret, Kind: api.TokenMember, Name: s.cfg.ID, CSR: csr})
		if err != nil {
			writeError(w, unreachable(err))
			return
		}
		next, err := identity.Parse(key, got.Cert, got.CA)
		if err != nil {
			writeError(w, err)
			return
		}
		if next.CAHash != tok.CAHash {
			writeError(w, fmt.Errorf("%w: the peer answered with another CA than the token names", api.ErrForbidden))
			return
		}
		if err := identity.Save(identityDir(s.cfg), key, got.Cert, got.CA); err != nil {
			writeError(w, err)
			return
		}
		s.holder.Set(next)
		s.log.Info("member certificate received", "peer", req.Peer, "serial", identity.SerialOf(next.Leaf))
	}
	c := api.NewTLSPeerClient(req.Peer, s.holder.ClientConfig())
	defer c.Close()
	join := api.JoinRequest{ID: s.cfg.ID, RaftAddr: s.cfg.RaftAddr, HTTPAddr: s.cfg.HTTPAddr, StateKey: s.store.StateKeyCheck(),
		Protocol: MaxProtocol, Release: ReleaseName()}
	if err := c.AddMember(ctx, join); err != nil {
		writeError(w, unreachable(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": fmt.Sprintf("%s joined the cluster of %s", s.cfg.ID, req.Peer)})
}

func (s *Server) handleAddMember(w http.ResponseWriter, r *http.Request) error {
	var req api.JoinRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if c := callerOf(r); !c.admin && (c.peer.Kind != identity.KindMember || (r.Header.Get(headerForwarded) == "" && c.peer.Name != req.ID)) {
		return fmt.Errorf("%w: only coordinator %s itself (its member certificate) adds it to the cluster", api.ErrForbidden, req.ID)
	}
	if err := s.store.AddVoter(r.Context(), req); err != nil {
		return err
	}
	s.log.Info("coordinator joined", "id", req.ID, "raft_addr", req.RaftAddr)
	writeJSON(w, http.StatusOK, map[string]string{"message": "added " + req.ID})
	return nil
}

func (s *Server) handleRemoveMember(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := api.ValidateMemberID("coordinator", id); err != nil {
		return err
	}
	if err := s.store.RemoveServer(r.Context(), id); err != nil {
		return err
	}
	s.log.Info("coordinator left", "id", id)
	writeJSON(w, http.StatusOK, map[string]string{"message": "removed " + id})
	return nil
}

func (s *Server) handlePlans(w http.ResponseWriter, _ *http.Request) error {
	var plans []api.Plan
	s.store.FSM().Read(func(st *State, _ uint64) { plans = append(plans, st.Plans...) })
	api.SortPlans(plans)
	writeJSON(w, http.StatusOK, plans)
	return nil
}

func (s *Server) handleEngines(w http.ResponseWriter, _ *http.Request) error {
	var engines []api.EngineVersion
	s.store.FSM().Read(func(st *State, _ uint64) { engines = append(engines, st.Engines...) })
	writeJSON(w, http.StatusOK, engines)
	return nil
}

func (s *Server) handleHosts(w http.ResponseWriter, _ *http.Request) error {
	var out []api.HostView
	s.store.FSM().Read(func(st *State, _ uint64) {
		used, count := map[string]int{}, map[string]int{}
		for _, a := range st.Addons {
			plan, _ := api.FindPlan(st.Plans, a.Plan)
			for _, m := range a.Members {
				used[m.HostID] += scheduler.Reservation(m.Role, plan)
				count[m.HostID]++
			}
		}
		for _, h := range sortedHosts(st.Hosts) {
			out = append(out, api.HostView{Host: h, CommittedMB: used[h.ID], FreeMB: h.MemoryMB - used[h.ID], Members: count[h.ID]})
		}
	})
	for i := range out {
		out[i].Figures = s.stats.host(out[i].ID)
		if seen := s.obs.lastSeen(out[i].ID); !seen.IsZero() {
			out[i].LastHeartbeat = seen.UTC()
		}
	}
	if out == nil {
		out = []api.HostView{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleAddonStats answers addons-stats: per member, the latest figures and
// the last hour (one point a minute).
func (s *Server) handleAddonStats(w http.ResponseWriter, r *http.Request) error {
	app := r.URL.Query().Get("app")
	if err := api.ValidateAppName(app); err != nil {
		return err
	}
	var (
		a  api.Addon
		ok bool
	)
	s.store.FSM().Read(func(st *State, _ uint64) { a, ok = st.addonByApp(app) })
	if !ok {
		return fmt.Errorf("%w: app %s has no redis addon", api.ErrNotFound, app)
	}
	var plan api.Plan
	s.store.FSM().Read(func(st *State, _ uint64) { plan, _ = api.FindPlan(st.Plans, a.Plan) })
	out := api.AddonStats{AddonID: a.ID, App: a.App, Plan: a.Plan, Members: []api.MemberStats{}}
	since := s.now().Add(-time.Hour)
	for _, m := range a.Members {
		ms := api.MemberStats{MemberID: m.ID, Role: m.Role, HostID: m.HostID}
		if st, seen := s.obs.member(m.HostID, m.ID); seen {
			ms.State = st.State
		}
		ms.Latest, ms.History = s.stats.member(m.ID, since)
		ms.Latest = withPlanFree(ms.Latest, m.Role, plan) // free: what the plan still allows
		out.Members = append(out.Members, ms)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleAddons(w http.ResponseWriter, r *http.Request) error {
	app := r.URL.Query().Get("app")
	if app != "" {
		if err := api.ValidateAppName(app); err != nil {
			return err
		}
	}
	out := []api.Addon{}
	s.store.FSM().Read(func(st *State, _ uint64) {
		for _, a := range sortedAddons(st.Addons) {
			if app == "" || a.App == app {
				out = append(out, a.Redacted())
			}
		}
	})
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleAddon(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var (
		a  api.Addon
		ok bool
	)
	hosts := map[string]api.Host{}
	s.store.FSM().Read(func(st *State, _ uint64) {
		a, ok = st.Addons[id]
		for _, m := range a.Members {
			hosts[m.HostID] = st.Hosts[m.HostID]
		}
	})
	if !ok {
		return fmt.Errorf("%w: no addon %s", api.ErrNotFound, id)
	}
	a = a.Redacted()
	s.observeMembers(&a, hosts)
	writeJSON(w, http.StatusOK, a)
	return nil
}

// observeMembers fills each member's State from what the fleet observes:
// the agent's last report, "unknown (host down)" for a member of a down
// host (its last report says nothing about now), "unknown (not reported)"
// before its agent reported it; and the addon's Health (operation.Health).
func (s *Server) observeMembers(a *api.Addon, hosts map[string]api.Host) {
	obs := map[string]operation.Observed{}
	for i, m := range a.Members {
		ms, seen := s.obs.member(m.HostID, m.ID)
		switch {
		case hosts[m.HostID].State == api.HostDown:
			a.Members[i].State = "unknown (host down)"
			seen = false
		case !seen:
			a.Members[i].State = "unknown (not reported)"
		default:
			a.Members[i].State = ms.State
		}
		obs[m.ID] = operation.Observed{Seen: seen, State: ms.State, Detail: ms.Detail, RedisRole: ms.RedisRole, Offset: ms.ReplOffset}
	}
	a.Health = operation.Health(operation.Topology{Addon: *a, Hosts: hosts, Observed: obs})
}

func (s *Server) handleAddonCreate(w http.ResponseWriter, r *http.Request) error {
	var req api.AddonCreateRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	var (
		plans    []api.Plan
		engines  []api.EngineVersion
		existing api.Addon
		exists   bool
	)
	s.store.FSM().Read(func(st *State, _ uint64) {
		plans = append(plans, st.Plans...)
		engines = append(engines, st.Engines...)
		existing, exists = st.addonByApp(req.App)
	})
	if err := req.Validate(plans, engines); err != nil {
		return err
	}
	if exists && (req.RequestID == "" || existing.RequestID != req.RequestID) {
		return fmt.Errorf("%w: app %s already has a redis addon (%s, %s); remove it first or change its plan",
			api.ErrConflict, req.App, existing.ID, existing.Plan)
	}
	plan, _ := api.FindPlan(plans, req.Plan)
	// With hosts registered, refuse at once what cannot be placed; with
	// none yet, accept: the operation waits for the first hosts.
	if !exists {
		if err := s.pre.check(s.store.FSM(), req.App, plan, s.now()); err != nil {
			return err
		}
	}
	for attempt := 0; ; attempt++ {
		cmd, err := s.newAddon(req, plan)
		if err != nil {
			return err
		}
		res, err := s.store.Apply(r.Context(), CmdAddonCreate, cmd)
		if errors.Is(err, errIDTaken) && attempt < 10 {
			continue
		}
		if err != nil {
			return err
		}
		a := res.(api.Addon)
		status, opID := http.StatusCreated, cmd.Operation.ID
		if a.ID != cmd.Addon.ID { // idempotent replay of an earlier request
			status, opID = http.StatusOK, ""
		}
		s.log.Info("addon added", "addon", a.ID, "app", a.App, "plan", a.Plan)
		writeJSON(w, status, api.AddonCreateResponse{
			Addon: a.Redacted(), OperationID: opID,
			Message: fmt.Sprintf("Addon %s (%s) is being provisioned for app %s", a.ID, a.Plan, a.App),
		})
		return nil
	}
}

// newAddon builds the create command: the leader picks ids, the app's
// password, the fleet credential and times here so that Apply stays
// deterministic.
func (s *Server) newAddon(req api.AddonCreateRequest, plan api.Plan) (AddonCreateCmd, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(9000))
	if err != nil {
		return AddonCreateCmd{}, fmt.Errorf("addon id: %w", err)
	}
	pw, err := NewPassword()
	if err != nil {
		return AddonCreateCmd{}, err
	}
	fleet, err := NewPassword()
	if err != nil {
		return AddonCreateCmd{}, err
	}
	opID, err := newOperationID()
	if err != nil {
		return AddonCreateCmd{}, err
	}
	now := s.now().UTC()
	a := api.Addon{
		ID: fmt.Sprintf("%s-%d", req.App, 1000+n.Int64()), App: req.App, Type: api.AddonType,
		Plan: plan.Name, Engine: req.Engine, Version: req.Version, Password: pw,
		FleetPassword: fleet, Settings: api.DefaultSettings(), Status: api.AddonProvisioning,
		CreatedAt: now, UpdatedAt: now, RequestID: req.RequestID,
	}
	if s.cfg.EntrypointMode == api.EntrypointKernel { // the fleet default (config entrypoint_mode)
		a.Settings.Entrypoint = api.EntrypointKernel
	}
	a.Settings.MemberTLS = s.cfg.MemberTLS // the fleet default (config member_tls)
	if req.MemberTLS != nil {
		a.Settings.MemberTLS = *req.MemberTLS
	}
	if a.Settings.MemberTLS && a.Settings.EntrypointMode() == api.EntrypointKernel {
		// The kernel forwards to redis's TLS-only port: only TLS clients
		// get through, so the URL says rediss:// (api.CheckEntrypointTLS).
		a.Settings.ForceTLS = true
	}
	op := api.Operation{
		ID: opID, AddonID: a.ID, App: a.App, Kind: api.OpProvision, State: api.OpPending,
		Steps: operation.ProvisionSteps(), CreatedAt: now, UpdatedAt: now,
	}
	return AddonCreateCmd{Addon: a, Operation: op}, nil
}

// NewPassword returns 64 URL-safe characters from crypto/rand: an app's
// password or a fleet credential.
func NewPassword() (api.Secret, error) {
	b := make([]byte, 48)
	if _, err := rand.Read(b); err != nil {
		return api.Secret{}, fmt.Errorf("generate password: %w", err)
	}
	return api.NewSecret(base64.RawURLEncoding.EncodeToString(b)), nil
}

func newOperationID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("operation id: %w", err)
	}
	return "op-" + hex.EncodeToString(b), nil
}

func (s *Server) handleAddonRemove(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	app := r.URL.Query().Get("app")
	if app == "" {
		return api.Invalidf("app name is missing: pass --app APP")
	}
	if err := api.ValidateAppName(app); err != nil {
		return err
	}
	opID, err := newOperationID()
	if err != nil {
		return err
	}
	now := s.now().UTC()
	op := api.Operation{ID: opID, AddonID: id, App: app, Kind: api.OpRemove, State: api.OpPending,
		Steps: operation.RemoveSteps(), CreatedAt: now, UpdatedAt: now}
	res, err := s.store.Apply(r.Context(), CmdAddonRemove, AddonRemoveCmd{AddonID: id, App: app, Operation: op, At: now})
	if err != nil {
		return err
	}
	got := res.(api.Operation)
	s.log.Info("addon removal started", "addon", id, "app", app, "op", got.ID)
	writeJSON(w, http.StatusAccepted, api.AddonRemoveResponse{Operation: got,
		Message: fmt.Sprintf("Addon %s is being removed (operation %s)", id, got.ID)})
	return nil
}

func (s *Server) handleEnv(w http.ResponseWriter, r *http.Request) error {
	app := r.URL.Query().Get("app")
	if err := api.ValidateAppName(app); err != nil {
		return err
	}
	var (
		a  api.Addon
		ok bool
	)
	s.store.FSM().Read(func(st *State, _ uint64) { a, ok = st.addonByApp(app) })
	if !ok {
		return fmt.Errorf("%w: app %s has no redis addon; add one with: cacheplane addons-add --app %s redis PLAN", api.ErrNotFound, app, app)
	}
	if a.Entrypoint == "" {
		return fmt.Errorf("%w: addon %s is %s and has no address yet; its URL is known once its members are placed",
			api.ErrConflict, a.ID, a.Status)
	}
	u := RedisURL(a)
	writeJSON(w, http.StatusOK, api.EnvResponse{App: app, AddonID: a.ID, Vars: []api.EnvVar{
		{Name: "REDIS_URL", Value: u},
		{Name: s.cfg.EnvPrefix + "_REDIS_URL", Value: u},
	}})
	return nil
}

// RedisURL is the addon's connection URL. It names the user ("default",
// the only one) rather than leaving it empty as redis://:PW@ does: redis-cli
// 7.0 sends AUTH with an empty user name for the latter and is refused,
// while go-redis, node-redis and ioredis accept both forms.
func RedisURL(a api.Addon) string {
	scheme := "redis"
	if a.Settings.ForceTLS {
		scheme = "rediss"
	}
	return (&url.URL{Scheme: scheme, User: url.UserPassword("default", a.Password.Reveal()), Host: a.Entrypoint}).String()
}

func (s *Server) handleOperations(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	app, addon := q.Get("app"), q.Get("addon")
	if app != "" {
		if err := api.ValidateAppName(app); err != nil {
			return err
		}
	}
	out := []api.Operation{}
	s.store.FSM().Read(func(st *State, _ uint64) {
		for _, o := range sortedOperations(st.Operations) {
			if (app == "" || o.App == app) && (addon == "" || o.AddonID == addon) {
				o.Steps = append([]api.Step(nil), o.Steps...)
				out = append(out, o)
			}
		}
	})
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleOperationCancel(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := api.ValidateMemberID("operation", id); err != nil {
		return err
	}
	res, err := s.store.Apply(r.Context(), CmdOperationCancel, OperationCancelCmd{OperationID: id, At: s.now().UTC()})
	if err != nil {
		return err
	}
	op := res.(api.Operation)
	s.log.Warn("operation cancel requested", "op", op.ID, "addon", op.AddonID, "kind", op.Kind)
	writeJSON(w, http.StatusAccepted, api.OperationCancelResponse{Operation: op,
		Message: fmt.Sprintf("Operation %s (%s of %s) stops at its next safe point; follow it with: cacheplane operations --addon %s", op.ID, op.Kind, op.AddonID, op.AddonID)})
	return nil
}

func (s *Server) handleSettings(w http.ResponseWriter, r *http.Request) error {
	var req api.SettingsRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := api.ValidateAppName(req.App); err != nil {
		return err
	}
	var (
		a  api.Addon
		ok bool
	)
	s.store.FSM().Read(func(st *State, _ uint64) { a, ok = st.addonByApp(req.App) })
	if !ok {
		return fmt.Errorf("%w: app %s has no redis addon", api.ErrNotFound, req.App)
	}
	next, err := req.Apply(a.Settings)
	if err != nil {
		return err
	}
	if next == a.Settings {
		writeJSON(w, http.StatusOK, api.AddonSettingsResponse{Addon: a.Redacted(), Message: "Settings unchanged"})
		return nil
	}
	opID, err := newOperationID()
	if err != nil {
		return err
	}
	now := s.now().UTC()
	op := api.Operation{ID: opID, AddonID: a.ID, App: a.App, Kind: api.OpSettingsChange, State: api.OpPending,
		Steps: operation.SettingsSteps(), CreatedAt: now, UpdatedAt: now}
	res, err := s.store.Apply(r.Context(), CmdAddonSettings, AddonSettingsCmd{AddonID: a.ID, Settings: next, Operation: op, At: now})
	if err != nil {
		return err
	}
	got := res.(api.Addon)
	s.log.Info("settings change started", "addon", a.ID, "op", op.ID, "persistence", next.Persistence, "cache_mode", next.CacheMode,
		"entrypoint", next.EntrypointMode(), "force_tls", next.ForceTLS, "internet_access", next.InternetAccess)
	writeJSON(w, http.StatusAccepted, api.AddonSettingsResponse{Addon: got.Redacted(), Operation: op,
		Message: fmt.Sprintf("Settings of %s are being changed live (operation %s): persistence %s, cache mode %s, entrypoint %s, force TLS %s, internet access %s",
			a.ID, op.ID, next.Persistence, onOff(next.CacheMode), next.EntrypointMode(), onOff(next.ForceTLS), onOff(next.InternetAccess)) +
			accessWarning(next)})
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// handleDrain marks a host draining (the heal controller then moves its
// members off one by one, primaries by a coordinated failover first) or
// makes a drained host eligible again.
func (s *Server) handleDrain(drain bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		if err := api.ValidateMemberID("host", id); err != nil {
			return err
		}
		var (
			h  api.Host
			ok bool
		)
		s.store.FSM().Read(func(st *State, _ uint64) { h, ok = st.Hosts[id] })
		if !ok {
			return fmt.Errorf("%w: no host %s (see: cacheplane hosts)", api.ErrNotFound, id)
		}
		msg := ""
		switch {
		case drain && h.State == api.HostDraining:
			msg = "Host " + id + " is already draining"
		case drain:
			h.State = api.HostDraining
			h.DrainingSince = s.now().UTC()
			msg = "Host " + id + " is draining: its members move to other hosts one by one (follow with: cacheplane operations)"
		case h.State != api.HostDraining:
			return fmt.Errorf("%w: host %s is %s, not draining", api.ErrConflict, id, h.State)
		default:
			h.State = api.HostReady
			msg = "Host " + id + " is eligible for new members again"
		}
		if msg != "Host "+id+" is already draining" {
			if _, err := s.store.Apply(r.Context(), CmdHostUpsert, HostUpsertCmd{Host: h}); err != nil {
				return err
			}
			s.log.Info("host drain changed", "host", id, "state", h.State)
		}
		if drain {
			// Starters cannot be moved by a switchover: say which stay.
			var left []operation.Left
			s.store.FSM().Read(func(st *State, _ uint64) {
				left = operation.PlanHealing(operation.Fleet{Hosts: st.Hosts, Addons: sortedAddons(st.Addons), Plans: st.Plans,
					Active: map[string]api.Operation{}, Now: s.now().UTC()}, operation.HealConfig{}).Left
			})
			for _, l := range left {
				if l.HostID == id {
					msg += "\n  " + l.MemberID + " stays: " + l.Reason
				}
			}
		} else {
			// Undrain cancels the drain's moves that have not finished.
			var moves []string
			s.store.FSM().Read(func(st *State, _ uint64) {
				for _, o := range st.activeOps(api.OpReplaceMember) {
					if o.CancelRequested || o.Reason != "host "+id+" is draining" {
						continue
					}
					moves = append(moves, o.ID)
				}
			})
			for _, opID := range moves {
				if _, err := s.store.Apply(r.Context(), CmdOperationCancel, OperationCancelCmd{OperationID: opID, At: s.now().UTC()}); err != nil {
					return fmt.Errorf("cancel drain move %s: %w", opID, err)
				}
				msg += "\n  drain move " + opID + " cancelled (it stops at its next safe point)"
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"message": msg})
		return nil
	}
}

func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}
