package agent

// Member TLS (api.Settings.MemberTLS): the redis members and sentinels of
// such an addon listen on TLS only, replicate over TLS, and its HAProxys
// reach them over TLS. The agent
//
//   - writes the addon's certificate, key and the cluster CA into the
//     member's dir (tls.crt, tls.key, ca.crt; mode 0600) before the
//     member starts: redis.conf and sentinel.conf name them
//     (render.MemberTLS), haproxy.cfg names ca.crt (render.HAProxyServerTLS);
//   - states the process's TLS table (redisctl.SetTLS) from its
//     assignments, so every client it makes of those members and
//     sentinels (probes, the guard, the router's sentinel watch, backups)
//     speaks TLS to them, verifying the addon id the certificate carries;
//   - reloads a renewed certificate into a running redis with CONFIG SET
//     tls-cert-file … tls-key-file … (Redis ≥ 7 and Valkey re-read the
//     files on every such SET, even of the same path): established
//     connections keep their session, new handshakes get the new
//     certificate, nothing restarts. A sentinel cannot: redis-sentinel
//     refuses CONFIG SET (and SENTINEL CONFIG SET takes no tls-*
//     parameter; measured on 7.0.15), so a sentinel serves the
//     certificate it started with: the agent restarts it for a renewed
//     one, one sentinel of the addon at a time (renewSentinelTLS).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Files of a member's dir for member TLS.
const (
	memberCertName = "tls.crt"
	memberKeyName  = "tls.key"
	memberCAName   = "ca.crt"
)

// errNoMemberCert: a member of an addon with member TLS whose assignment
// has no certificate yet. The coordinator hands such members out only
// once the certificate exists (coordinator/agentapi.go); an older one may
// not, and the member then waits rather than start without it.
var errNoMemberCert = fmt.Errorf("%w: member TLS: the addon's certificate has not been issued yet (the leader issues it within seconds)", api.ErrConflict)

// memberTLSFiles are the TLS files of member id's dir.
func (a *Agent) memberTLSFiles(id string) *render.MemberTLS {
	dir := a.memberDir(id)
	return &render.MemberTLS{CertFile: filepath.Join(dir, memberCertName), KeyFile: filepath.Join(dir, memberKeyName),
		CAFile: filepath.Join(dir, memberCAName)}
}

// memberTLSOf is the TLS files a member of as renders with: nil when the
// addon has no member TLS, errNoMemberCert while what it needs is missing
// (redis and sentinel need the certificate; HAProxy the CA only).
func (a *Agent) memberTLSOf(as api.Assignment) (*render.MemberTLS, error) {
	if !as.Settings.MemberTLS {
		return nil, nil
	}
	if as.CACert == "" || (as.Role != api.RoleHAProxy && (as.TLSCert == "" || as.TLSKey.IsZero())) {
		return nil, errNoMemberCert
	}
	return a.memberTLSFiles(as.MemberID), nil
}

// writeMemberFiles writes what a member reads at start beside its config
// file: a haproxy's access files (access.go), and the member TLS files.
func writeMemberFiles(p memberPlan) error {
	if p.access != nil { // access.go: HAProxy reads them at start
		if err := writeAccessFiles(p.access, p.as); err != nil {
			return err
		}
	}
	return writeMemberTLSFiles(p.tls, p.as)
}

// writeMemberTLSFiles writes the certificate, key (redis, sentinel) and CA
// files of t, mode 0600, when they changed.
func writeMemberTLSFiles(t *render.MemberTLS, as api.Assignment) error {
	if t == nil {
		return nil
	}
	if err := writeFileIfChanged(t.CAFile, []byte(as.CACert)); err != nil {
		return fmt.Errorf("write CA file: %w", err)
	}
	if as.Role == api.RoleHAProxy {
		return nil
	}
	// The key first: a redis started between the two writes reads a
	// certificate and key of different issuances at worst, refuses to
	// start, and is restarted after the certificate is written.
	if err := writeFileIfChanged(t.KeyFile, []byte(as.TLSKey.Reveal())); err != nil {
		return fmt.Errorf("write TLS key file: %w", err)
	}
	if err := writeFileIfChanged(t.CertFile, []byte(as.TLSCert)); err != nil {
		return fmt.Errorf("write TLS certificate file: %w", err)
	}
	return nil
}

// memberTLSState remembers, per redis member, the certificate serial its
// process was last told to load (CONFIG SET), so a renewal is reloaded
// once. Empty after the agent's start: the first pass sets the files
// again, which costs one CONFIG SET.
type memberTLSState struct {
	mu     sync.Mutex
	loaded map[string]string // member id → serial
	cas    map[string]*redisctl.TLS
}

// syncMemberTLS writes a running member's TLS files and, for redis, makes
// the process load a renewed certificate.
func (a *Agent) syncMemberTLS(ctx context.Context, p memberPlan) error {
	if p.tls == nil {
		return nil
	}
	if err := writeMemberTLSFiles(p.tls, p.as); err != nil {
		return err
	}
	if p.as.Role == api.RoleHAProxy {
		return nil // the CA only, read by the servers' TLS at start
	}
	c, err := identity.ParseCertPEM([]byte(p.as.TLSCert))
	if err != nil {
		return fmt.Errorf("assigned certificate: %w", err)
	}
	serial := c.SerialNumber.Text(16)
	if p.as.Role == api.RoleSentinel {
		return a.renewSentinelTLS(ctx, p, c)
	}
	a.mtls.mu.Lock()
	done := a.mtls.loaded[p.as.MemberID] == serial
	a.mtls.mu.Unlock()
	if done {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	rc := a.probes.client(p.as.MemberID, p.probe, p.as.FleetPassword.Reveal())
	if err := rc.ConfigSet(ctx, "tls-cert-file", p.tls.CertFile).Err(); err != nil {
		return fmt.Errorf("reload TLS certificate (CONFIG SET tls-cert-file): %w", err)
	}
	a.mtls.mu.Lock()
	if a.mtls.loaded == nil {
		a.mtls.loaded = map[string]string{}
	}
	a.mtls.loaded[p.as.MemberID] = serial
	a.mtls.mu.Unlock()
	a.log.Info("member TLS certificate loaded", "member", p.as.MemberID, "addon", p.as.AddonID, "serial", serial)
	return nil
}

// setMemberTLS states this agent's entries of the process's TLS table
// (redisctl.SetTLS) from its assignments: every redis member and sentinel
// address of an addon with member TLS that an assignment names (its own,
// the servers, the sentinels, the primary it replicates from) speaks TLS
// with the addon's CA and the addon id as the name.
func (a *Agent) setMemberTLS(assigned []api.Assignment) {
	table := map[string]*redisctl.TLS{}
	a.mtls.mu.Lock()
	defer a.mtls.mu.Unlock()
	cas := map[string]*redisctl.TLS{}
	for _, as := range assigned {
		if !as.Settings.MemberTLS || as.CACert == "" {
			continue
		}
		key := as.AddonID + "\x00" + as.CACert
		t := cas[key]
		if t == nil {
			if t = a.mtls.cas[key]; t == nil {
				var err error
				if t, err = redisctl.NewTLS(as.CACert, as.AddonID); err != nil {
					a.log.Warn("member TLS: unreadable CA", "addon", as.AddonID, "err", err)
					continue
				}
			}
			cas[key] = t
		}
		addrs := append(append([]string(nil), as.Servers...), as.Sentinels...)
		if as.ReplicaOf != "" {
			addrs = append(addrs, as.ReplicaOf)
		}
		if as.Primary != "" {
			addrs = append(addrs, as.Primary)
		}
		if as.Role != api.RoleHAProxy {
			addr := as.Address
			if addr == "" {
				addr = a.cfg.Address
			}
			addrs = append(addrs, net.JoinHostPort(addr, strconv.Itoa(as.Port)))
		}
		for _, ad := range addrs {
			table[ad] = t
		}
	}
	a.mtls.cas = cas
	ids := make(map[string]bool, len(assigned))
	for _, as := range assigned {
		ids[as.MemberID] = true
	}
	for id := range a.mtls.loaded {
		if !ids[id] {
			delete(a.mtls.loaded, id)
		}
	}
	redisctl.SetTLS("agent "+a.cfg.HostID, table)
}

// hapServerTLS is how a haproxy member reaches its addon's redis servers
// (nil: plaintext).
func hapServerTLS(t *render.MemberTLS, as api.Assignment) *render.HAProxyServerTLS {
	if t == nil {
		return nil
	}
	return &render.HAProxyServerTLS{CAFile: t.CAFile, ServerName: as.AddonID}
}

// sentinelRestartStep is how far apart an addon's sentinels restart for a
// renewed certificate (the k-th in address order waits k steps after the
// issuance): a twentieth of the certificate's life, between 1 s and 15 s,
// so at most one of the three is down at a time and all serve the new
// certificate long before the old one expires.
func sentinelRestartStep(life time.Duration) time.Duration {
	return min(max(life/20, time.Second), 15*time.Second)
}

// sentinelRestartAt is when the sentinel at self restarts for a
// certificate valid from notBefore to notAfter (issued a minute after
// notBefore: coordinator/addoncert.go backdates it). Pure.
func sentinelRestartAt(self string, sentinels []string, notBefore, notAfter time.Time) time.Time {
	ss := append([]string(nil), sentinels...)
	sort.Strings(ss)
	k := sort.SearchStrings(ss, self)
	return notBefore.Add(time.Minute).Add(time.Duration(k) * sentinelRestartStep(notAfter.Sub(notBefore)))
}

// renewSentinelTLS restarts a running sentinel that serves another
// certificate than its assignment's, at its turn (sentinelRestartAt):
// redis-sentinel cannot reload one live (it refuses CONFIG SET, and
// SENTINEL CONFIG SET takes no tls-* parameter, in Redis 7.0, Redis 8.0
// and Valkey 8), and an expired certificate would break the sentinels'
// links to each other and to the members (they verify the chain and its
// dates). The restart keeps sentinel.conf, which the sentinel rewrites
// with its state (epoch, primary, peers) and reads back: it only misses
// the seconds it is down. The members and the app's clients see nothing.
func (a *Agent) renewSentinelTLS(ctx context.Context, p memberPlan, want *x509.Certificate) error {
	dctx, cancel := context.WithTimeout(ctx, redisctl.SentinelTimeout)
	defer cancel()
	// Only the serial is read, to compare: not verified, so a sentinel
	// serving an expired certificate (its agent was down past it) is
	// restarted too.
	served, err := servedCert(dctx, p.probe, &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}) // #nosec G402
	if err != nil {
		return fmt.Errorf("sentinel TLS certificate: %w", err)
	}
	if served.SerialNumber.Cmp(want.SerialNumber) == 0 {
		return nil
	}
	if time.Now().Before(sentinelRestartAt(p.probe, p.as.Sentinels, want.NotBefore, want.NotAfter)) {
		return fmt.Errorf("sentinel restarts for its renewed certificate at its turn (one sentinel at a time)")
	}
	a.mu.Lock()
	a.starting[p.as.MemberID] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.starting, p.as.MemberID)
		a.mu.Unlock()
	}()
	if err := a.rt.Stop(ctx, p.spec.ID, runtime.DefaultReplaceGrace); err != nil {
		return fmt.Errorf("stop sentinel for its renewed certificate: %w", err)
	}
	if err := a.rt.Start(ctx, p.spec); err != nil {
		return fmt.Errorf("start sentinel with its renewed certificate: %w", err)
	}
	a.fleet.forget(p.as.MemberID)
	a.probes.close(p.as.MemberID)
	a.log.Info("sentinel restarted with its renewed TLS certificate", "member", p.as.MemberID, "addon", p.as.AddonID,
		"serial", want.SerialNumber.Text(16))
	return nil
}

// servedCert is the certificate the TLS server at addr presents.
func servedCert(ctx context.Context, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	certs := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s presented no certificate", addr)
	}
	return certs[0], nil
}

// forgetMemberTLS drops this agent's entries of the TLS table (Close).
func (a *Agent) forgetMemberTLS() { redisctl.SetTLS("agent "+a.cfg.HostID, nil) }
