package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
)

// Config file names inside a member's dir.
const (
	redisConfName    = "redis.conf"
	sentinelConfName = "sentinel.conf"
	haproxyConfName  = "haproxy.cfg"
	// sentinelHashName records the spec hash the sentinel.conf was written
	// for: Sentinel rewrites its own file, which is only replaced when the
	// member is re-created for a new spec.
	sentinelHashName = "sentinel.conf.spec-hash"
)

// Memory limits of the members whose size does not depend on the plan.
const (
	sentinelMemoryLimit = 64 << 20
	haproxyMemoryLimit  = 256 << 20
)

// LabelApp is an extra container label: the app owning the addon.
const LabelApp = "cacheplane.app"

// memberPlan is what the agent derived from one assignment: the config file
// to write and the container to run.
type memberPlan struct {
	as       api.Assignment
	dir      string // <data>/members/<id>
	confPath string
	conf     string
	// writeOnce: the file is written only when missing or for a new spec
	// (sentinel.conf, which Sentinel rewrites).
	writeOnce bool
	spec      runtime.Spec
	// probe is where the member answers: redis and sentinel speak RESP;
	// haproxy is checked with a TCP connect.
	probe string
	// access (haproxy): TLS, force TLS, internet access (access.go).
	access *render.HAProxyAccess
	// tls: the member TLS files (membertls.go); nil without member TLS.
	tls *render.MemberTLS
}

// endpoint parses "host:port".
func endpoint(what, s string) (render.Endpoint, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return render.Endpoint{}, fmt.Errorf("%s %q: %w", what, s, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return render.Endpoint{}, fmt.Errorf("%s %q: port: %w", what, s, err)
	}
	return render.Endpoint{Addr: host, Port: p}, nil
}

// planMember renders the config of as and builds its runtime spec. Errors
// never contain the password (render's don't).
func (a *Agent) planMember(as api.Assignment) (memberPlan, error) {
	if err := api.ValidateMemberID("member", as.MemberID); err != nil {
		return memberPlan{}, err
	}
	addr := as.Address
	if addr == "" {
		addr = a.cfg.Address
	}
	image := as.Image
	if image == "" {
		image = defaultImage(as.Engine, as.Version, as.Role)
	}
	p := memberPlan{as: as, dir: a.memberDir(as.MemberID)}
	p.spec = runtime.Spec{
		ID:      as.MemberID,
		Addon:   as.AddonID,
		Member:  as.MemberID,
		Role:    string(as.Role),
		Image:   image,
		DataDir: p.dir,
		Labels:  map[string]string{LabelApp: as.App},
	}
	// hashed is everything whose change needs a new process. Not in it:
	// the plan memory (maxmemory and the cgroup limit change live), the
	// persistence and cache-mode settings (CONFIG SET), ReplicaOf (a
	// failover must not restart anything: Sentinel re-points replicas
	// live; the file only matters at the next start) and, for sentinels,
	// the primary (Sentinel tracks it itself).
	hashed := map[string]any{
		"v": 1, "role": as.Role, "engine": as.Engine, "version": as.Version, "image": image,
		"address": addr, "port": as.Port,
	}
	var err error
	if p.tls, err = a.memberTLSOf(as); err != nil { // membertls.go
		return p, err
	}
	if p.tls != nil {
		// Fixed at the addon's creation; a member without it keeps its
		// hash as before member TLS existed.
		hashed["member_tls"] = true
	}
	switch as.Role {
	case api.RoleRedis:
		in := render.RedisInput{
			Engine: as.Engine, BindAddr: addr, Port: as.Port, AnnounceIP: addr, DataDir: p.dir,
			Password: as.Password, FleetPassword: as.FleetPassword, PlanMemoryMB: as.PlanMemoryMB, Settings: as.Settings,
			TLS: p.tls,
		}
		if as.ReplicaOf != "" {
			if in.ReplicaOf, err = endpoint("replica_of", as.ReplicaOf); err != nil {
				return p, err
			}
		}
		if p.conf, err = render.Redis(in); err != nil {
			return p, err
		}
		p.confPath = filepath.Join(p.dir, redisConfName)
		bin := "/usr/bin/redis-server"
		if as.Engine == api.EngineValkey {
			bin = "/usr/bin/valkey-server"
		}
		p.spec.Args = []string{bin, p.confPath}
		p.spec.MemoryLimitBytes = render.ContainerMemoryLimitBytes(as.PlanMemoryMB)
		// The fleet credential is not in the hash: it is applied live
		// (fleetauth.go), so an addon given one restarts nothing. Nor is
		// a rotated password: the one the addon had before its first
		// rotation stands for it (specPassword).
		hashed["password"] = specPassword(as)
		// Constant: force TLS is the entrypoint's, switched live
		// (access.go); the key stays so no member's hash changes.
		hashed["force_tls"] = false
		p.probe = net.JoinHostPort(addr, strconv.Itoa(as.Port))
	case api.RoleSentinel:
		in := render.SentinelInput{
			BindAddr: addr, Port: as.Port, AnnounceIP: addr, DataDir: p.dir,
			MasterName: as.MasterName, Password: as.FleetPassword, TLS: p.tls,
		}
		if in.Primary, err = endpoint("primary", as.Primary); err != nil {
			return p, err
		}
		if p.conf, err = render.Sentinel(in); err != nil {
			return p, err
		}
		p.confPath = filepath.Join(p.dir, sentinelConfName)
		p.writeOnce = true
		if as.Engine == api.EngineValkey {
			p.spec.Args = []string{"/usr/bin/valkey-server", p.confPath, "--sentinel"}
		} else {
			p.spec.Args = []string{"/usr/bin/redis-sentinel", p.confPath}
		}
		p.spec.MemoryLimitBytes = sentinelMemoryLimit
		hashed["master_name"] = as.MasterName
		// The app's password, as before the fleet credential: that one is
		// applied live (fleetauth.go), never by a new sentinel.conf, which
		// would make the sentinel forget its epoch and primary.
		hashed["password"] = specPassword(as)
		p.probe = net.JoinHostPort(addr, strconv.Itoa(as.Port))
	case api.RoleHAProxy:
		// HAProxy runs the same whatever the addon's engine version:
		// an upgrade that keeps its image restarts nothing.
		delete(hashed, "engine")
		delete(hashed, "version")
		in, err := a.haproxyInput(as)
		if err != nil {
			return p, err
		}
		if p.conf, err = render.HAProxy(in); err != nil {
			return p, err
		}
		p.confPath = filepath.Join(p.dir, haproxyConfName)
		p.spec.Args = []string{"/usr/sbin/haproxy", "-db", "-f", p.confPath}
		p.spec.MemoryLimitBytes = haproxyMemoryLimit
		p.spec.NoFileLimit = render.HAProxyOpenFiles(as.MaxConn)
		// HAProxy reads its file only at start: a change restarts it,
		// except a change of its server list, which the router applies
		// through the runtime API (route.go) while the file is rewritten
		// for the next start: a member added or removed (a plan change, a
		// replaced member) cuts no session. Who holds the VIP is not in
		// the file either (route.go enables the clients' frontend on the
		// holder): a VIP move restarts nothing.
		if hashed["conf"], err = render.HAProxyShape(in); err != nil {
			return p, err
		}
		// The member's own address: a frontend that is never disabled
		// (with a VIP, the clients' frontend is closed on the non-holder).
		p.probe = in.Local.String()
		// The certificate, force TLS and internet access are files and
		// runtime changes, not the shape: switching restarts nothing.
		p.access = in.Access
	default:
		return p, fmt.Errorf("%w: member %s: unknown role %q", api.ErrInvalid, as.MemberID, as.Role)
	}
	p.spec.SpecHash = hashOf(hashed)
	return p, nil
}

// haproxyInput is what a haproxy member's haproxy.cfg is rendered from:
// the entrypoint (the VIP:port, the same on both members of the pair, or
// the member's own address:port), the member's own address, the redis
// servers (in address order, named after their address:
// render.HAProxyServerName) and the admin stats
// socket in the member's dir, through which the agent routes (route.go).
func (a *Agent) haproxyInput(as api.Assignment) (render.HAProxyInput, error) {
	addr := as.Address
	if addr == "" {
		addr = a.cfg.Address
	}
	own := render.Endpoint{Addr: addr, Port: as.Port}
	in := render.HAProxyInput{AddonID: as.AddonID, Entrypoint: own, Local: own, SourceAddr: addr, Password: as.FleetPassword,
		MaxConn: as.MaxConn, StatsSocket: a.hapSocketPath(as.MemberID)}
	if as.Entrypoint != "" {
		var err error
		if in.Entrypoint, err = endpoint("entrypoint", as.Entrypoint); err != nil {
			return in, err
		}
	}
	mt, err := a.memberTLSOf(as) // membertls.go: the CA the servers are verified with
	if err != nil {
		return in, err
	}
	servers := append([]string(nil), as.Servers...)
	sort.Strings(servers)
	for _, s := range servers {
		e, err := endpoint("server", s)
		if err != nil {
			return in, err
		}
		in.Servers = append(in.Servers, render.HAProxyServer{Name: render.HAProxyServerName(e.Addr, e.Port), Addr: e.Addr, Port: e.Port,
			TLS: hapServerTLS(mt, as)})
	}
	in.Access = a.haproxyAccess(as.MemberID, in.Entrypoint.Port)
	return in, nil
}

// specPassword is the password a member's spec hash is made of: the
// addon's before its first rotation (api.Assignment.SpecPassword), else
// its password. The hash of a member made before rotations existed is
// unchanged, and a rotation, applied live (fleetauth.go), restarts
// nothing.
func specPassword(as api.Assignment) api.Secret {
	if !as.SpecPassword.IsZero() {
		return as.SpecPassword
	}
	return as.Password
}

// hashOf is a short, stable digest of v (maps marshal with sorted keys).
// The password may be part of v: only the digest is stored.
func hashOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("hash: %v", err)) // plain maps of strings and numbers
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:12])
}

// defaultImage is the catalog's image for role when the assignment names
// none.
func defaultImage(engine api.Engine, version string, role api.Role) string {
	for _, ev := range api.DefaultEngines() {
		if (engine == "" || ev.Engine == engine) && (version == "" || ev.Version == version) {
			return ev.Images[role]
		}
	}
	return ""
}
