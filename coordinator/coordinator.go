package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/dashboard"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Coordinator is one running member: Raft store, admin socket, peer API and
// the leadership loop.
type Coordinator struct {
	cfg    Config
	log    *slog.Logger
	store  *Store
	server *Server

	adminLn, peerLn net.Listener
	adminSrv        *http.Server
	peerSrv         *http.Server
	audit           *auditLog
	// The dashboard (dashboard.go): its server (nil when off) and logins.
	dashSrv *http.Server
	uiAuth  *dashboard.Auth

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// serving is every request's base context; Close cancels it so that
	// long polls (the agents' assignment watches) end instead of holding
	// the servers' shutdown for its whole timeout.
	serving     context.Context
	stopServing context.CancelFunc
	// tlsOwner names this coordinator's source in redisctl's TLS table
	// (membertls.go).
	tlsOwner string
}

// Start opens the store and starts serving. Stop it with Close.
func Start(cfg Config, log *slog.Logger, raftLog io.Writer) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	keys, created, err := LoadBackupKeys(cfg.BackupKeysFile, time.Now())
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	// Listen on the peer address first: a second coordinator on the same
	// address fails before touching the Raft files.
	peerLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on http_addr %s: %w", cfg.HTTPAddr, err)
	}
	holder := &identity.Holder{}
	mid := &memberIdentity{id: cfg.ID, dir: identityDir(cfg), ttl: time.Duration(cfg.MemberCertTTL), holder: holder,
		log: log.With("component", "identity"), now: time.Now}
	if _, err := mid.load(); err != nil {
		peerLn.Close()
		return nil, fmt.Errorf("member certificate in %s: %w", mid.dir, err)
	}
	store, err := OpenStore(cfg, log.With("component", "raft"), raftLog, holder)
	if err != nil {
		peerLn.Close()
		return nil, err
	}
	mid.fsm = store.FSM()
	switch {
	case store.Unsecured():
		log.Warn("the peer API also serves plain HTTP, for the older members and agents of a cluster made before identities, until this member has its certificate: run cacheplane cluster-secure once every coordinator runs this release (docs/security.md)",
			"cluster_token", cfg.ClusterToken != "")
	case cfg.ClusterToken != "":
		log.Warn("cluster_token is ignored: coordinators and agents authenticate with certificates of the cluster CA; remove it from the configuration (docs/security.md)")
	}
	adminLn, err := listenSocket(cfg.Socket)
	if err != nil {
		peerLn.Close()
		_ = store.Close()
		return nil, err
	}
	audit, err := openAuditLog(filepath.Join(cfg.DataDir, "audit.log"))
	if err != nil {
		peerLn.Close()
		adminLn.Close()
		_ = store.Close()
		return nil, err
	}
	c := &Coordinator{cfg: cfg, log: log, store: store, adminLn: adminLn, peerLn: peerLn, audit: audit, uiAuth: dashboard.NewAuth(nil)}
	c.serving, c.stopServing = context.WithCancel(context.Background())
	obs := newObserved()
	m := newMetrics()
	m.reg.MustRegister(newStateCollector(store, cfg.ID))
	store.applySeconds = m.applySeconds
	backups, err := newBackupEnv(cfg, keys, newBackupMetrics(m.reg))
	if err != nil {
		peerLn.Close()
		adminLn.Close()
		_ = audit.Close()
		_ = store.Close()
		return nil, err
	}
	if created {
		log.Warn("backup keys file created with a new key: copy it (mode 0600) to every other coordinator of this cluster, and keep a copy apart: backups cannot be read without it",
			"backup_keys_file", cfg.BackupKeysFile, "keyring", keys)
	}
	stats := newStatsHistory()
	c.server = newServer(cfg, store, obs, stats, log.With("component", "api"), holder)
	c.server.backups = backups
	m.reg.MustRegister(newMemoryCollector(store, stats, cfg.ID))
	adminAPI := gateFeatures(store, adminHandler(c.server.Handler()))
	c.adminSrv = &http.Server{Handler: withPprof(c.adminHandler(adminAPI)), ReadHeaderTimeout: 10 * time.Second, ConnContext: withPeerCred,
		BaseContext: c.baseContext}
	// The peer API: TLS (the member certificate); a client shows a
	// certificate of the cluster CA, and peerHandler authorizes the route.
	// A member of a cluster made before identities also serves plain HTTP
	// until it has its certificate (peerplain.go).
	peer := http.NewServeMux()
	peer.Handle("GET /metrics", m.handler())
	peer.HandleFunc("POST /v1/internal/figures", c.server.handleFigures)
	peer.HandleFunc("GET "+protocolPath, c.server.handleProtocol)
	peer.Handle("/", gateFeatures(store, c.server.Handler()))
	c.peerSrv = &http.Server{Handler: c.server.peerHandler(peer), ReadHeaderTimeout: 10 * time.Second, BaseContext: c.baseContext,
		HTTP2:    &http.HTTP2Config{MaxConcurrentStreams: peerStreams}, // followers forward on few connections (forwardConns)
		ErrorLog: slog.NewLogLogger(log.With("component", "peer-api").Handler(), slog.LevelDebug)}
	peerLn = newPeerListener(peerLn, holder.ServerConfig(false), store.Unsecured)
	c.peerLn = peerLn

	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.server.relay = newFiguresRelay(store, cfg.ID, holder, log.With("component", "relay"))
	c.server.relayCtx = ctx
	lead := &leadership{
		store: store, log: log.With("component", "leader"),
		self: api.CoordinatorMember{ID: cfg.ID, RaftAddr: cfg.RaftAddr, HTTPAddr: cfg.HTTPAddr, Protocol: MaxProtocol, Release: ReleaseName(),
			StateKey: store.StateKeyCheck()},
		controllers: []Controller{
			&hostsController{store: store, obs: obs, log: log.With("component", "hosts"), now: time.Now, downAfter: time.Duration(cfg.HostDownAfter),
				suspectAfter: time.Duration(cfg.HostSuspectAfter), probe: probeTCP},
			&topologyController{store: store, obs: obs, log: log.With("component", "topology"), now: time.Now,
				askLatest: redisctl.AskLatest, remonitor: redisctl.Remonitor, failover: redisctl.Failover, demote: redisctl.Demote,
				settings: redisctl.SentinelSettings{Quorum: render.SentinelQuorum, DownAfter: render.SentinelDownAfter,
					FailoverTimeout: render.SentinelFailoverTimeout, ParallelSyncs: render.SentinelParallelSyncs}},
			&engine{store: store, obs: obs, stats: stats, log: log.With("component", "operations"), now: time.Now, vipPool: cfg.EntrypointCIDR,
				heal:   operation.HealConfig{HealAfter: time.Duration(cfg.HealAfter), MaxParallel: cfg.HealParallel},
				limits: operation.DefaultLimits(), act: redisActions(), hook: newAppHook(cfg), backups: backups},
			&fleetCredController{store: store, log: log.With("component", "fleet-credential")},
			&addonCertController{store: store, log: log.With("component", "addon-certificates"), ttl: time.Duration(cfg.AddonCertTTL), now: time.Now},
			&protocolController{store: store, self: cfg.ID, log: log.With("component", "protocol"),
				every: 2 * time.Second, client: &http.Client{Transport: &http.Transport{
					DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext, TLSClientConfig: holder.ClientConfig(),
					MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}}},
			&backupsController{store: store, obs: obs, env: backups, log: log.With("component", "backups"), now: time.Now,
				every: time.Duration(cfg.BackupCheckEvery)},
		},
	}
	// Member TLS: the coordinator's clients of members speak TLS to the
	// addons that have it (membertls.go).
	c.tlsOwner = "coordinator " + cfg.ID
	redisctl.SetTLSSource(c.tlsOwner, (&memberTLSTable{fsm: store.FSM()}).lookup)
	c.startDashboard(adminAPI) // before the admin socket serves: ui-token reads dashSrv
	c.wg.Add(4)
	go func() { defer c.wg.Done(); lead.run(ctx) }()
	go func() { defer c.wg.Done(); mid.run(ctx) }()
	go func() { defer c.wg.Done(); c.serve(c.adminSrv, adminLn, "admin socket") }()
	go func() { defer c.wg.Done(); c.serve(c.peerSrv, peerLn, "peer api") }()
	log.Info("coordinator started", "id", cfg.ID, "raft_addr", cfg.RaftAddr, "http_addr", cfg.HTTPAddr, "socket", cfg.Socket,
		"backup_store", cfg.BackupStore, "backup_keys", keys)
	return c, nil
}

// Close's bounds: how long a stopping leader waits for another voter to
// take over, and how long running requests get before they are cancelled.
const (
	handOffWithin = 3 * time.Second
	stopGrace     = 500 * time.Millisecond
)

func (c *Coordinator) serve(srv *http.Server, ln net.Listener, what string) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		c.log.Error("server stopped", "what", what, "err", err)
	}
}

// Store exposes the Raft store (tests, controllers).
func (c *Coordinator) Store() *Store { return c.store }

// baseContext is every request's base context (http.Server.BaseContext).
func (c *Coordinator) baseContext(net.Listener) context.Context { return c.serving }

// Close stops serving and shuts Raft down; the member stays in the cluster.
//
// A leader first hands its leadership to another voter (within
// handOffWithin), while it still serves: otherwise the cluster has a leader
// that no longer answers (forwarded writes refused) until it is gone and an
// election timeout has passed. Then the servers stop; requests still running
// after stopGrace are cancelled (long polls end at once).
func (c *Coordinator) Close() error {
	if err := c.store.HandOff(handOffWithin); err != nil {
		c.log.Warn("stopping as leader: leadership not handed over, the others elect a new one", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cut := time.AfterFunc(stopGrace, c.stopServing)
	defer cut.Stop()
	defer c.stopServing()
	var shut sync.WaitGroup
	for _, srv := range []*http.Server{c.adminSrv, c.peerSrv} {
		shut.Add(1)
		go func() { defer shut.Done(); _ = srv.Shutdown(ctx) }()
	}
	shut.Wait()
	c.closeDashboard(ctx)
	// Controllers first: one may be waiting on a Raft write, which only
	// Raft can answer.
	c.cancel()
	c.wg.Wait()
	redisctl.SetTLSSource(c.tlsOwner, nil)
	err := c.store.Close()
	_ = c.audit.Close()
	_ = os.Remove(c.cfg.Socket)
	return err
}

// listenSocket listens on a unix socket that only its owner can use (0600,
// in a 0700 directory when it creates one). A stale socket file left by a
// crash is replaced; a live one is an error.
func listenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket dir: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		conn, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			conn.Close()
			return nil, fmt.Errorf("admin socket %s: another coordinator is listening there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale admin socket %s: %w", path, err)
		}
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod admin socket: %w", err)
	}
	return ln, nil
}

// NewLogger returns the daemon's JSON logger at level.
func NewLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}
