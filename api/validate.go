package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// MaxRequestBytes bounds every admin request body.
const MaxRequestBytes = 64 << 10

// MaxHeartbeatBytes bounds a heartbeat (and a relay of its figures): each
// member's status with its figures is ~1–2 KB, so a host with a few hundred
// members fits (64 KiB refused a host of ~60 and marked it down).
const MaxHeartbeatBytes = 4 << 20

var (
	appNameRe   = regexp.MustCompile(`^[a-z][a-z0-9-]{1,46}[a-z0-9]$`)
	memberIDRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	requestIDRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)
)

// ValidateAppName checks an app name: 3 to 48 characters, lowercase letters,
// digits and hyphens, starting with a letter and not ending with a hyphen.
func ValidateAppName(name string) error {
	if name == "" {
		return Invalidf("app name is missing: pass --app APP")
	}
	if !appNameRe.MatchString(name) || strings.Contains(name, "--") {
		return Invalidf("app name %q is malformed: use 3 to 48 lowercase letters, digits and single hyphens, starting with a letter (e.g. my-app)", name)
	}
	return nil
}

// ValidateMemberID checks a coordinator or host id.
func ValidateMemberID(kind, id string) error {
	if id == "" {
		return Invalidf("%s id is missing", kind)
	}
	if !memberIDRe.MatchString(id) {
		return Invalidf("%s id %q is malformed: use up to 63 letters, digits, '.', '_' or '-'", kind, id)
	}
	return nil
}

// AddonCreateRequest asks for a new addon.
type AddonCreateRequest struct {
	App       string `json:"app"`
	Type      string `json:"type"`
	Plan      string `json:"plan"`
	Engine    Engine `json:"engine,omitempty"`
	Version   string `json:"version,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// MemberTLS asks for member TLS (Settings.MemberTLS); nil means the
	// fleet's default (the coordinator's member_tls).
	MemberTLS *bool `json:"member_tls,omitempty"`
}

// Validate checks the request against the catalogs and fills defaults
// (engine and version). It never changes anything else.
func (r *AddonCreateRequest) Validate(plans []Plan, engines []EngineVersion) error {
	if err := ValidateAppName(r.App); err != nil {
		return err
	}
	if r.Type == "" {
		return Invalidf("addon type is missing: the only type is %q", AddonType)
	}
	if r.Type != AddonType {
		return Invalidf("unknown addon type %q: the only type is %q", r.Type, AddonType)
	}
	if r.Plan == "" {
		return Invalidf("plan is missing; valid plans: %s", planNames(plans))
	}
	if _, ok := FindPlan(plans, r.Plan); !ok {
		return Invalidf("unknown plan %q; valid plans: %s", r.Plan, planNames(plans))
	}
	if r.RequestID != "" && !requestIDRe.MatchString(r.RequestID) {
		return Invalidf("request id %q is malformed", r.RequestID)
	}
	ev, err := ResolveEngine(engines, r.Engine, r.Version)
	if err != nil {
		return err
	}
	r.Engine, r.Version = ev.Engine, ev.Version
	return nil
}

// FindPlan looks a plan up by name.
func FindPlan(plans []Plan, name string) (Plan, bool) {
	for _, p := range plans {
		if p.Name == name {
			return p, true
		}
	}
	return Plan{}, false
}

func planNames(plans []Plan) string {
	ps := append([]Plan(nil), plans...)
	SortPlans(ps)
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

// ResolveEngine picks the catalog entry for engine/version; empty values pick
// the default engine and, for an engine, its newest listed version.
func ResolveEngine(engines []EngineVersion, engine Engine, version string) (EngineVersion, error) {
	var keys []string
	var match *EngineVersion
	for i := range engines {
		e := engines[i]
		keys = append(keys, e.Key())
		switch {
		case engine == "" && version == "" && e.Default:
			match = &engines[i]
		case engine == "" && version != "" && e.Version == version && match == nil:
			match = &engines[i]
		case engine == e.Engine && (version == "" || version == e.Version):
			match = &engines[i]
		}
	}
	sort.Strings(keys)
	if match == nil {
		what := string(engine)
		if version != "" {
			what = strings.TrimPrefix(what+"-"+version, "-")
		}
		if what == "" {
			what = "default engine"
		}
		return EngineVersion{}, Invalidf("unknown engine version %q; available: %s", what, strings.Join(keys, ", "))
	}
	return *match, nil
}

// JoinRequest asks the cluster to add a coordinator as a voter.
type JoinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
	// StateKey is the joiner's state key check value (coordinator
	// statekeys.go): a cluster that seals its log refuses a member
	// that could not read it.
	StateKey string `json:"state_key,omitempty"`
	// Protocol and Release are the joining member's (recorded with it at
	// once, so that the cluster's level does not drop while it joins); an
	// older release sends none.
	Protocol int    `json:"protocol,omitempty"`
	Release  string `json:"release,omitempty"`
}

// Validate checks the ids and addresses.
func (r *JoinRequest) Validate() error {
	if err := ValidateMemberID("coordinator", r.ID); err != nil {
		return err
	}
	if err := ValidateHostPort("raft address", r.RaftAddr); err != nil {
		return err
	}
	return ValidateHostPort("http address", r.HTTPAddr)
}

// JoinPeerRequest asks the local coordinator to join the cluster that the
// coordinator at Peer (its HTTP address) belongs to.
type JoinPeerRequest struct {
	Peer string `json:"peer"`
	// Token is a member join token (cacheplane members-token).
	Token string `json:"token,omitempty"`
}

// Validate checks the peer address.
func (r *JoinPeerRequest) Validate() error {
	if err := ValidateHostPort("peer address", r.Peer); err != nil {
		return err
	}
	if r.Token == "" {
		return Invalidf("a member join token is missing: run cacheplane members-token on a member of the cluster, then join PEER --token TOKEN")
	}
	return nil
}

// ValidateHostPort checks a host:port with a numeric port.
func ValidateHostPort(what, addr string) error {
	if addr == "" {
		return Invalidf("%s is missing", what)
	}
	i := strings.LastIndex(addr, ":")
	if i <= 0 || i == len(addr)-1 {
		return Invalidf("%s %q is not host:port", what, addr)
	}
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil || port <= 0 || port > 65535 || fmt.Sprint(port) != addr[i+1:] {
		return Invalidf("%s %q has no valid port", what, addr)
	}
	return nil
}

// ReadBodyN reads a request body of at most limit bytes that is not
// empty (DecodeN's checks, for a caller with its own decoder). Every
// failure is an ErrInvalid.
func ReadBodyN(r io.Reader, limit int) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, Invalidf("reading request body: %v", err)
	}
	if len(body) > limit {
		return nil, Invalidf("request body is larger than %d bytes", limit)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, Invalidf("request body is empty: expected a JSON object")
	}
	return body, nil
}

// Decode reads one JSON object from r into v: bounded in size
// (MaxRequestBytes), unknown fields refused, trailing data refused. Every
// failure is an ErrInvalid.
func Decode(r io.Reader, v any) error { return DecodeN(r, v, MaxRequestBytes) }

// DecodeN is Decode with a size bound of limit bytes.
func DecodeN(r io.Reader, v any, limit int) error {
	body, err := ReadBodyN(r, limit)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Invalidf("request body is not valid JSON for this call: %v", err)
	}
	if dec.More() {
		return Invalidf("request body has data after the JSON object")
	}
	return nil
}

// SettingsRequest changes an addon's settings; nil fields stay as they are.
type SettingsRequest struct {
	App         string  `json:"app"`
	Persistence *string `json:"persistence,omitempty"`
	CacheMode   *bool   `json:"cache_mode,omitempty"`
	ForceTLS    *bool   `json:"force_tls,omitempty"`
	// InternetAccess: see Settings.InternetAccess.
	InternetAccess *bool `json:"internet_access,omitempty"`
	// Entrypoint: haproxy or kernel.
	Entrypoint *string `json:"entrypoint,omitempty"`
}

// Apply validates the request and returns the settings it asks for.
func (r *SettingsRequest) Apply(cur Settings) (Settings, error) {
	if err := ValidateAppName(r.App); err != nil {
		return cur, err
	}
	if r.Persistence == nil && r.CacheMode == nil && r.ForceTLS == nil && r.InternetAccess == nil && r.Entrypoint == nil {
		return cur, Invalidf("nothing to change: pass --persistence rdb|aof, --cache-mode on|off, --force-tls on|off, --internet-access on|off or --entrypoint haproxy|kernel")
	}
	next := cur
	if r.Persistence != nil {
		switch *r.Persistence {
		case PersistenceRDB, PersistenceAOF:
			next.Persistence = *r.Persistence
		default:
			return cur, Invalidf("persistence %q: use rdb or aof", *r.Persistence)
		}
	}
	if r.CacheMode != nil {
		next.CacheMode = *r.CacheMode
	}
	if r.Entrypoint != nil {
		if *r.Entrypoint == "" {
			return cur, Invalidf("entrypoint \"\": use haproxy or kernel")
		}
		if err := ValidateEntrypointMode(*r.Entrypoint); err != nil {
			return cur, err
		}
		if *r.Entrypoint != cur.EntrypointMode() {
			next.Entrypoint = *r.Entrypoint
		}
	}
	if r.ForceTLS != nil {
		next.ForceTLS = *r.ForceTLS
	}
	if r.InternetAccess != nil {
		next.InternetAccess = *r.InternetAccess
	}
	if err := CheckEntrypointTLS(next); err != nil {
		return cur, err
	}
	return next, nil
}

// CheckEntrypointTLS refuses the settings whose TLS the entrypoint mode
// cannot give. The kernel entrypoint forwards connections to the primary's
// port as they are: without member TLS that port is plaintext, so force
// TLS cannot refuse plaintext; with member TLS it is TLS only, so the
// apps must speak TLS and the URL must say rediss:// (force TLS on).
func CheckEntrypointTLS(s Settings) error {
	if s.EntrypointMode() != EntrypointKernel {
		return nil
	}
	if s.ForceTLS && !s.MemberTLS {
		return Invalidf("force TLS needs the haproxy entrypoint for an addon without member TLS: the kernel entrypoint forwards connections to redis's plaintext port and cannot refuse plaintext (docs/entrypoint.md); pass --entrypoint haproxy with --force-tls on, or --force-tls off before --entrypoint kernel")
	}
	if !s.ForceTLS && s.MemberTLS {
		return Invalidf("an addon with member TLS needs force TLS on with the kernel entrypoint: the kernel forwards connections to redis's TLS-only port, so only TLS clients get through (docs/entrypoint.md); pass --force-tls on with --entrypoint kernel, or --entrypoint haproxy before --force-tls off")
	}
	return nil
}
