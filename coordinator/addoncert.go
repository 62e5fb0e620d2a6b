package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// Addon server certificates (issue 13, part 1): each addon has one, signed
// by the cluster CA for the names and addresses its clients reach it by
// (its entrypoint's address, each entrypoint host's address and public
// address, and the addon id as a DNS name). The leader issues it and
// renews it (addonCertController); it is recorded with command 37
// (sealed at rest like every entry when state keys are set), handed to the
// addon's HAProxy members (and, with member TLS, to every member: its redis
// members and sentinels serve with it, membertls.go) with their assignments
// over the agents' mutual TLS, and swapped into the running HAProxys by
// their agents (agent/access.go: `set ssl cert`; redis reloads it with
// CONFIG SET, sentinels restart one at a time: agent/membertls.go).

// MinAddonCertTTL is the shortest addon_cert_ttl the config takes.
const MinAddonCertTTL = 10 * time.Second

// defaultAddonCertTTL is addon_cert_ttl's default.
const defaultAddonCertTTL = 90 * 24 * time.Hour

// addonCertEvery is how often the leader looks for certificates to issue.
const addonCertEvery = time.Second

// AddonCertCmd records an addon's new server certificate and key.
type AddonCertCmd struct {
	AddonID string     `json:"addon_id"`
	Cert    string     `json:"cert"`
	Key     api.Secret `json:"key"`
}

func (f *FSM) applyAddonCert(c AddonCertCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	if c.Cert == "" || c.Key.IsZero() {
		return fmt.Errorf("%w: addon %s: empty certificate or key", api.ErrInvalid, c.AddonID)
	}
	a.TLSCert, a.TLSKey = c.Cert, c.Key
	f.state.Addons[a.ID] = a
	return nil
}

// certNames are the names an addon's certificate must cover.
type certNames struct {
	DNS []string
	IPs []string
}

// addonCertNames lists them: the addon id, the entrypoint's address, the
// address and public address of each host running one of its HAProxys
// (starters and a VIP's backup both serve on a host's own address), sorted.
func addonCertNames(st *State, a api.Addon) certNames {
	n := certNames{DNS: []string{a.ID}}
	add := func(ip string) {
		if ip != "" && net.ParseIP(ip) != nil && !slices.Contains(n.IPs, ip) {
			n.IPs = append(n.IPs, ip)
		}
	}
	if host, _, err := net.SplitHostPort(a.Entrypoint); err == nil {
		add(host)
	}
	for _, m := range a.Members {
		if m.Role != api.RoleHAProxy {
			continue
		}
		h := st.Hosts[m.HostID]
		add(m.Address)
		add(h.Address)
		add(h.PublicAddress)
	}
	slices.Sort(n.IPs)
	return n
}

// certHeld is what the decision needs of a held certificate.
type certHeld struct {
	NotBefore, NotAfter time.Time
	Names               certNames
}

// parseCertHeld reads a PEM certificate; ok is false when there is none
// or it cannot be read.
func parseCertHeld(certPEM string) (certHeld, bool) {
	if certPEM == "" {
		return certHeld{}, false
	}
	c, err := identity.ParseCertPEM([]byte(certPEM))
	if err != nil {
		return certHeld{}, false
	}
	h := certHeld{NotBefore: c.NotBefore, NotAfter: c.NotAfter, Names: certNames{DNS: c.DNSNames}}
	for _, ip := range c.IPAddresses {
		h.Names.IPs = append(h.Names.IPs, ip.String())
	}
	slices.Sort(h.Names.IPs)
	return h, true
}

// Reasons to issue an addon certificate.
const (
	certNone    = "none yet"
	certRenamed = "its names changed"
	certRenew   = "renewal due"
	certExpired = "expired"
)

// addonCertDue decides whether an addon needs a new certificate and why:
// none (or an unreadable one), names that differ from the wanted ones (an
// entrypoint host replaced, a public address set), two thirds of its life
// passed (identity.RenewDue), or expired. Pure.
func addonCertDue(held certHeld, ok bool, want certNames, now time.Time) (bool, string) {
	switch {
	case !ok:
		return true, certNone
	case !now.Before(held.NotAfter):
		return true, certExpired
	case !slices.Equal(held.Names.IPs, want.IPs) || !slices.Equal(held.Names.DNS, want.DNS):
		return true, certRenamed
	case identity.RenewDue(held.NotBefore, held.NotAfter, now):
		return true, certRenew
	}
	return false, ""
}

// addonCertController issues and renews the addons' certificates on the
// leader, at once and then every addonCertEvery; while some coordinator
// cannot apply command 37 (Store.Supports) it waits.
//
// A pass costs nothing while nothing can have changed: it looks at the
// addons only when the FSM applied an entry since its last look (a new
// addon, a moved HAProxy, a public address) or when the earliest renewal
// or expiry it saw is reached; and it parses each certificate once (scan
// keeps the parsed form by addon). At 10,000 addons every second, sorting
// them and parsing every certificate under the FSM's lock cost 13 % of
// the leader's CPU (docs/benchmarks.md, scale).
type addonCertController struct {
	store *Store
	log   *slog.Logger
	ttl   time.Duration
	now   func() time.Time

	scan certScan
}

func (c *addonCertController) Name() string { return "addon-certificates" }

func (c *addonCertController) Run(ctx context.Context) {
	runEvery(ctx, c.log, addonCertEvery, "addon certificates wait until every coordinator applies command 37", "addon certificate not issued yet", c.pass)
}

// certDue is an addon that needs a certificate, and why.
type certDue struct {
	id, why string
	names   certNames
}

// certScan remembers what the last look at the addons saw: the FSM index
// it looked at, the earliest time a held certificate falls due, and each
// addon's parsed certificate (by its PEM, so a new one is parsed again).
type certScan struct {
	index   uint64
	nextDue time.Time
	parsed  map[string]parsedCert
}

type parsedCert struct {
	pem  string
	held certHeld
	ok   bool
}

// due lists the addons that need a certificate at now, sorted by id; it
// returns nil at once when the state is at the index of the last look and
// no held certificate falls due before now. Called under the FSM's read
// lock; no I/O.
func (s *certScan) due(st *State, index uint64, now time.Time) []certDue {
	if index == s.index && s.parsed != nil && now.Before(s.nextDue) {
		return nil
	}
	if s.parsed == nil {
		s.parsed = map[string]parsedCert{}
	}
	var todo []certDue
	next := time.Time{}
	for id, a := range st.Addons {
		if a.Status == api.AddonRemoving || a.Entrypoint == "" {
			continue
		}
		p, cached := s.parsed[id]
		if !cached || p.pem != a.TLSCert {
			p.pem = a.TLSCert
			p.held, p.ok = parseCertHeld(a.TLSCert)
			s.parsed[id] = p
		}
		want := addonCertNames(st, a)
		if yes, why := addonCertDue(p.held, p.ok, want, now); yes {
			todo = append(todo, certDue{id, why, want})
			continue
		}
		if at := identity.RenewAt(p.held.NotBefore, p.held.NotAfter); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if len(s.parsed) > len(st.Addons) {
		for id := range s.parsed {
			if _, ok := st.Addons[id]; !ok {
				delete(s.parsed, id)
			}
		}
	}
	if next.IsZero() {
		next = now.Add(24 * time.Hour)
	}
	s.index, s.nextDue = index, next
	if len(todo) > 0 {
		s.index = 0 // look again next pass, whatever is issued meanwhile
	}
	slices.SortFunc(todo, func(a, b certDue) int { return strings.Compare(a.id, b.id) })
	return todo
}

// pass issues a certificate to each addon that needs one.
func (c *addonCertController) pass(ctx context.Context) error {
	var (
		ca   *identity.CA
		todo []certDue
	)
	now := c.now()
	c.store.FSM().Read(func(st *State, index uint64) {
		if st.CA == nil {
			return
		}
		cp := *st.CA
		ca = &cp
		todo = c.scan.due(st, index, now)
	})
	if ca == nil || len(todo) == 0 {
		return nil
	}
	ttl := c.ttl
	if ttl <= 0 {
		ttl = defaultAddonCertTTL
	}
	for _, d := range todo {
		cert, key, err := ca.IssueServer(identity.ServerRequest{Name: d.id, DNSNames: d.names.DNS, IPs: d.names.IPs,
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ttl)})
		if err != nil {
			return fmt.Errorf("addon %s: %w", d.id, err)
		}
		if _, err := c.store.Apply(ctx, CmdAddonCert, AddonCertCmd{AddonID: d.id, Cert: cert, Key: api.NewSecret(key)}); err != nil {
			if errors.Is(err, api.ErrNotFound) {
				continue // removed meanwhile
			}
			return err
		}
		c.log.Info("addon certificate issued", "addon", d.id, "why", d.why, "ips", d.names.IPs, "valid_for", ttl.String())
	}
	return nil
}

// accessWarning is what addons-settings adds when internet access is on
// without force TLS (docs/security.md recommends both together).
func accessWarning(s api.Settings) string {
	if s.InternetAccess && !s.ForceTLS {
		return "\nWarning: internet access is on without force TLS: the password and data cross the internet in plaintext for clients not using rediss://; turn it on with: --force-tls on"
	}
	return ""
}

// handleAddonCA answers addons-ca: the cluster CA certificate, which signs
// the app's addon's server certificate (the key stays in the FSM).
func (s *Server) handleAddonCA(w http.ResponseWriter, r *http.Request) error {
	app := r.URL.Query().Get("app")
	if err := api.ValidateAppName(app); err != nil {
		return err
	}
	var (
		a  api.Addon
		ok bool
		ca string
	)
	s.store.FSM().Read(func(st *State, _ uint64) {
		a, ok = st.addonByApp(app)
		if st.CA != nil {
			ca = st.CA.CertPEM
		}
	})
	if !ok {
		return fmt.Errorf("%w: app %s has no redis addon", api.ErrNotFound, app)
	}
	if ca == "" || a.TLSCert == "" {
		return fmt.Errorf("%w: addon %s has no TLS certificate yet (the leader issues one within seconds of its placement)", api.ErrConflict, a.ID)
	}
	writeJSON(w, http.StatusOK, api.AddonCAResponse{App: app, AddonID: a.ID, CAPEM: ca})
	return nil
}
