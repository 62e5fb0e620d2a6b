package redisctl

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Identity is where a redis member listens and what it tells others about
// itself: the CONFIG parameters that must keep the values its redis.conf
// gives them for the fleet to reach it (bind, port), find its data (dir)
// and for its primary and the sentinels to record the right address
// (replica-announce-ip and -port). A CONFIG SET of any of them (an
// operator, a script, a client with the password) silently moves the
// member away from what the fleet expects.
type Identity struct {
	Bind       string // the host's address
	Port       int
	Dir        string // the member's data dir, as redis sees it
	AnnounceIP string
	// AnnouncePort is replica-announce-port; 0 (redis's default) means
	// the member's own port.
	AnnouncePort int
}

// Identity parameter names.
const (
	ParamBind         = "bind"
	ParamPort         = "port"
	ParamDir          = "dir"
	ParamAnnounceIP   = "replica-announce-ip"
	ParamAnnouncePort = "replica-announce-port"
)

// Params are the identity's CONFIG parameters, in the order a restore sets
// them (where the member listens first).
func (id Identity) Params() []Param {
	return []Param{
		{ParamBind, id.Bind},
		{ParamPort, strconv.Itoa(id.Port)},
		{ParamDir, id.Dir},
		{ParamAnnounceIP, id.AnnounceIP},
		{ParamAnnouncePort, strconv.Itoa(id.AnnouncePort)},
	}
}

// Drift is one identity parameter whose CONFIG GET value differs from the
// wanted one.
type Drift struct {
	Name string
	Want string
	Got  string
}

func (d Drift) String() string { return fmt.Sprintf("%s %q (want %q)", d.Name, d.Got, d.Want) }

// IdentityDrift compares CONFIG GET answers with want (pure) and returns
// the parameters that drifted, in Params' order. Values are compared as
// redis means them: bind as a set of addresses, dir as a cleaned path. A
// parameter missing from got counts as drifted (redis answers every one of
// them).
func IdentityDrift(want Identity, got map[string]string) []Drift {
	var out []Drift
	for _, p := range want.Params() {
		g, ok := got[p.Name]
		if ok && sameIdentityValue(p.Name, g, p.Value) {
			continue
		}
		out = append(out, Drift{Name: p.Name, Want: p.Value, Got: g})
	}
	return out
}

func sameIdentityValue(name, got, want string) bool {
	switch name {
	case ParamBind:
		a, b := strings.Fields(got), strings.Fields(want)
		slices.Sort(a)
		slices.Sort(b)
		return slices.Equal(a, b)
	case ParamDir:
		return got != "" && filepath.Clean(got) == filepath.Clean(want)
	}
	return strings.TrimSpace(got) == strings.TrimSpace(want)
}

// AnnounceDrifted reports whether drifts include an announce parameter:
// a replica only tells its primary (and so the sentinels) its announce
// address when it connects, so its link must be re-made for a restore to
// reach them (ResetMasterLink).
func AnnounceDrifted(drifts []Drift) bool {
	for _, d := range drifts {
		if d.Name == ParamAnnounceIP || d.Name == ParamAnnouncePort {
			return true
		}
	}
	return false
}

// identityParams are the parameters GetIdentity reads.
var identityParams = []any{"config", "get", ParamBind, ParamPort, ParamDir, ParamAnnounceIP, ParamAnnouncePort}

// GetIdentity reads the identity parameters through an open client (the
// agent's probe client): one CONFIG GET of the five (Redis ≥ 7, Valkey).
func GetIdentity(ctx context.Context, c *redis.Client) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return identityOf(c.Do(ctx, identityParams...))
}

// ReplicationAndIdentity is ClientReplication and GetIdentity in one
// round trip (the agent's probe of a serving redis, every heartbeat).
func ReplicationAndIdentity(ctx context.Context, c *redis.Client) (Replication, map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var info *redis.StringCmd
	var id *redis.Cmd
	_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		info = p.Info(ctx, "replication")
		id = p.Do(ctx, identityParams...)
		return nil
	})
	if err := info.Err(); err != nil {
		return Replication{}, nil, fmt.Errorf("info replication: %w", err)
	}
	r, err := ParseReplication(info.Val())
	if err != nil {
		return Replication{}, nil, err
	}
	got, err := identityOf(id)
	return r, got, err
}

// identityOf reads CONFIG GET's answer (a flat list, or a map in RESP3).
func identityOf(cmd *redis.Cmd) (map[string]string, error) {
	if err := cmd.Err(); err != nil {
		return nil, fmt.Errorf("CONFIG GET identity: %w", err)
	}
	out := make(map[string]string, len(identityParams)-2)
	switch v := cmd.Val().(type) {
	case []any:
		for i := 0; i+1 < len(v); i += 2 {
			k, _ := v[i].(string)
			val, _ := v[i+1].(string)
			out[k] = val
		}
	case map[any]any:
		for k, val := range v {
			ks, _ := k.(string)
			vs, _ := val.(string)
			out[ks] = vs
		}
	default:
		return nil, fmt.Errorf("CONFIG GET identity: unexpected answer %T", v)
	}
	for _, n := range identityParams[2:] {
		if _, ok := out[n.(string)]; !ok {
			return nil, fmt.Errorf("CONFIG GET %s: no such parameter", n)
		}
	}
	return out, nil
}

// RestoreIdentity sets every drifted parameter back to its wanted value
// with CONFIG SET, in order, and returns those it set; it stops at the
// first refusal (e.g. dir, a protected config in Redis 7 unless
// enable-protected-configs allows it).
func RestoreIdentity(ctx context.Context, c *redis.Client, drifts []Drift) ([]Drift, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	for i, d := range drifts {
		if err := c.ConfigSet(ctx, d.Name, d.Want).Err(); err != nil {
			return drifts[:i], fmt.Errorf("CONFIG SET %s: %w", d.Name, err)
		}
	}
	return drifts, nil
}

// ResetMasterLink makes a replica drop its link to its primary (CLIENT
// KILL TYPE master); it reconnects at once, announcing its current
// replica-announce-ip/-port, and continues with a partial resync. A no-op
// on a primary.
func ResetMasterLink(ctx context.Context, c *redis.Client) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "master").Err(); err != nil {
		return fmt.Errorf("CLIENT KILL TYPE master: %w", err)
	}
	return nil
}

// ClientReplicaOf makes the member behind an open client a replica of
// primary (host:port).
func ClientReplicaOf(ctx context.Context, c *redis.Client, primary string) error {
	host, port, err := net.SplitHostPort(primary)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("replicaof: primary address %q: %w", primary, errBadAddr(err))
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := c.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		return fmt.Errorf("REPLICAOF %s %s: %w", host, port, err)
	}
	return nil
}
