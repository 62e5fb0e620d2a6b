package redisctl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
)

// What an engine upgrade asks of a node: which engine and version it runs
// (INFO server), whether it serves in the role it should with its data
// (INFO replication, persistence, keyspace), and a snapshot on disk before
// it restarts (BGSAVE, waited for).

// Server is what INFO server says of the engine a node runs.
type Server struct {
	Engine  api.Engine
	Version string
	// Mode is standalone or sentinel (redis_mode; Valkey 8: server_mode).
	Mode string
}

func (s Server) String() string { return string(s.Engine) + " " + s.Version }

// ParseServer reads the engine and its version from an INFO server answer
// (pure): Valkey reports valkey_version (its redis_version stays 7.2.4 for
// clients) and server_name:valkey; Redis reports redis_version only.
func ParseServer(info string) (Server, error) {
	f := infoFields(info)
	s := Server{Mode: f["redis_mode"]}
	if m := f["server_mode"]; m != "" {
		s.Mode = m
	}
	switch {
	case f["valkey_version"] != "":
		s.Engine, s.Version = api.EngineValkey, f["valkey_version"]
	case f["server_name"] == string(api.EngineValkey):
		return Server{}, errors.New("info server: server_name:valkey without valkey_version")
	case f["redis_version"] != "":
		s.Engine, s.Version = api.EngineRedis, f["redis_version"]
	default:
		return Server{}, errors.New("info server: no redis_version")
	}
	return s, nil
}

// infoFields maps the "key:value" lines of an INFO answer.
func infoFields(info string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out
}

// ParseKeys sums keys=N over the dbN lines of an INFO keyspace answer
// (pure): every database counts (addons have five).
func ParseKeys(info string) (int64, error) {
	var n int64
	for k, v := range infoFields(info) {
		if !strings.HasPrefix(k, "db") || !isDigits(k[2:]) {
			continue
		}
		for _, kv := range strings.Split(v, ",") {
			if c, ok := strings.CutPrefix(kv, "keys="); ok {
				x, err := strconv.ParseInt(c, 10, 64)
				if err != nil || x < 0 {
					return 0, fmt.Errorf("info keyspace: %s: keys %q", k, c)
				}
				n += x
			}
		}
	}
	return n, nil
}

// Persistence is what INFO persistence says of snapshots.
type Persistence struct {
	Loading bool
	// BGSaveInProgress: a background save runs; Saves counts the
	// snapshots taken since start (rdb_saves); LastBGSaveOK is
	// rdb_last_bgsave_status:ok.
	BGSaveInProgress bool
	Saves            int64
	LastBGSaveOK     bool
}

// ParsePersistence parses an INFO persistence answer (pure).
func ParsePersistence(info string) (Persistence, error) {
	f := infoFields(info)
	var p Persistence
	if _, ok := f["rdb_bgsave_in_progress"]; !ok {
		return p, errors.New("info persistence: no rdb_bgsave_in_progress")
	}
	p.Loading = f["loading"] == "1"
	p.BGSaveInProgress = f["rdb_bgsave_in_progress"] == "1"
	p.LastBGSaveOK = f["rdb_last_bgsave_status"] == "ok"
	if v := f["rdb_saves"]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return p, fmt.Errorf("info persistence: rdb_saves %q", v)
		}
		p.Saves = n
	}
	return p, nil
}

// Node is one redis node as an upgrade checks it.
type Node struct {
	Server      Server
	Replication Replication
	Persistence Persistence
	Keys        int64
}

// ParseNode parses the answer of INFO server replication persistence
// keyspace (pure).
func ParseNode(info string) (Node, error) {
	var n Node
	var err error
	if n.Server, err = ParseServer(info); err != nil {
		return n, err
	}
	if n.Replication, err = ParseReplication(info); err != nil {
		return n, err
	}
	if n.Persistence, err = ParsePersistence(info); err != nil {
		return n, err
	}
	if n.Keys, err = ParseKeys(info); err != nil {
		return n, err
	}
	return n, nil
}

// ReadNode dials the member at addr and reads it with one INFO.
func ReadNode(ctx context.Context, addr, password string) (Node, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(addr, password))
	defer c.Close()
	return clientNode(ctx, c, addr)
}

func clientNode(ctx context.Context, c *redis.Client, addr string) (Node, error) {
	info, err := c.Info(ctx, "server", "replication", "persistence", "keyspace").Result()
	if err != nil {
		return Node{}, fmt.Errorf("info on %s: %w", addr, err)
	}
	n, err := ParseNode(info)
	if err != nil {
		return Node{}, fmt.Errorf("%s: %w", addr, err)
	}
	return n, nil
}

// SentinelServer reads the engine and version of the sentinel at addr.
func SentinelServer(ctx context.Context, addr, password string) (Server, error) {
	ctx, cancel := context.WithTimeout(ctx, SentinelTimeout)
	defer cancel()
	c := redis.NewClient(SentinelOptions(addr, password))
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return Server{}, fmt.Errorf("info server on sentinel %s: %w", addr, err)
	}
	s, err := ParseServer(info)
	if err != nil {
		return Server{}, fmt.Errorf("sentinel %s: %w", addr, err)
	}
	return s, nil
}

// Promotable reports whether a sentinel's replicas list addr as a
// replica it could promote: not down or disconnected, its link to the
// primary ok (as of the sentinel's last INFO of it).
func Promotable(replicas []Peer, addr string) bool {
	for _, p := range replicas {
		if p.Addr == addr && !p.Down() && p.LinkStatus == "ok" && slices.Contains(p.Flags, "slave") {
			return true
		}
	}
	return false
}

// Want is what a node must be for an upgrade step to count as done.
type Want struct {
	Engine  api.Engine
	Version string
	// Master: it must answer as a master. Else ReplicaOf is the primary
	// (host:port) it must follow with its link up and within InSyncBytes
	// of the primary's offset.
	Master      bool
	ReplicaOf   string
	InSyncBytes int64
	// MinKeys, when ≥ 0: it must have loaded its data and hold at least
	// this many keys (a restarted primary has its data back).
	MinKeys int64
}

// Judge says why n is not what w wants ("" when it is); primaryOffset is
// the primary's master_repl_offset read just before n (for a replica).
// Pure.
func (w Want) Judge(n Node, primaryOffset int64) string {
	if n.Server.Engine != w.Engine || n.Server.Version != w.Version {
		return fmt.Sprintf("runs %s, want %s %s", n.Server, w.Engine, w.Version)
	}
	if n.Persistence.Loading {
		return "still loading its data"
	}
	switch {
	case w.Master && n.Replication.Role != RoleMaster:
		return fmt.Sprintf("answers as %s, want a master", n.Replication.Role)
	case !w.Master && n.Replication.Role != RoleReplica:
		return fmt.Sprintf("answers as %s, want a replica of %s", n.Replication.Role, w.ReplicaOf)
	case !w.Master && n.Replication.Master() != w.ReplicaOf:
		return fmt.Sprintf("follows %s, want %s", n.Replication.Master(), w.ReplicaOf)
	case !w.Master && n.Replication.LinkStatus != "up":
		return fmt.Sprintf("its link to %s is %s (syncing)", w.ReplicaOf, orNone(n.Replication.LinkStatus))
	case !w.Master && primaryOffset-n.Replication.Offset > w.InSyncBytes:
		return fmt.Sprintf("is %d bytes behind its primary", primaryOffset-n.Replication.Offset)
	}
	if w.MinKeys >= 0 && n.Keys < w.MinKeys {
		return fmt.Sprintf("holds %d keys, %d before the upgrade", n.Keys, w.MinKeys)
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// CheckNode reads the node at addr (and, for a replica, its primary
// first) and returns nil when it is what w wants, else an error saying
// why not.
func CheckNode(ctx context.Context, addr, password string, w Want) (Node, error) {
	var primaryOffset int64
	if !w.Master {
		p, err := GetReplication(ctx, w.ReplicaOf, password)
		if err != nil {
			return Node{}, fmt.Errorf("primary: %w", err)
		}
		primaryOffset = p.Offset
	}
	n, err := ReadNode(ctx, addr, password)
	if err != nil {
		return Node{}, err
	}
	if why := w.Judge(n, primaryOffset); why != "" {
		return n, fmt.Errorf("%s %s", addr, why)
	}
	return n, nil
}

func okErr(ok bool) string {
	if ok {
		return "ok"
	}
	return "err"
}

// Snapshot makes the node at addr write its dataset to its RDB file and
// waits until it has, without blocking its clients: BGSave (a save
// already running is waited for first, a new one follows; a failed save
// is an error). Bounded by ctx.
func Snapshot(ctx context.Context, addr, password string) error {
	_, err := BGSave(ctx, addr, password)
	return err
}
