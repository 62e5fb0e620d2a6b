package redisctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Roles as INFO replication spells them.
const (
	RoleMaster  = "master"
	RoleReplica = "slave"
)

// Replication is what INFO replication says.
type Replication struct {
	Role string // RoleMaster or RoleReplica
	// Offset is master_repl_offset: on a master the replication stream it
	// produced, on a replica how much of its master's it processed.
	Offset int64
	// MasterHost, MasterPort and LinkStatus ("up", "down") are a
	// replica's view of its master; empty on a master.
	MasterHost string
	MasterPort int
	LinkStatus string
	// Replicas are a master's connected replicas (connected_slaves).
	Replicas []ReplicaInfo
}

// ReplicaInfo is one slaveN line of a master's INFO replication.
type ReplicaInfo struct {
	IP     string
	Port   int
	State  string // online, wait_bgsave, send_bulk…
	Offset int64
	Lag    int64 // seconds since its last ACK
}

// Addr is the replica's ip:port.
func (r ReplicaInfo) Addr() string { return net.JoinHostPort(r.IP, strconv.Itoa(r.Port)) }

// IsMaster reports whether the member is a master.
func (r Replication) IsMaster() bool { return r.Role == RoleMaster }

// Master is a replica's master as host:port ("" on a master).
func (r Replication) Master() string {
	if r.MasterHost == "" {
		return ""
	}
	return net.JoinHostPort(r.MasterHost, strconv.Itoa(r.MasterPort))
}

// ParseReplication parses the answer of INFO replication (pure).
func ParseReplication(info string) (Replication, error) {
	var r Replication
	connected := -1
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		var err error
		switch {
		case k == "role":
			r.Role = v
		case k == "master_repl_offset":
			r.Offset, err = strconv.ParseInt(v, 10, 64)
		case k == "master_host":
			r.MasterHost = v
		case k == "master_port":
			r.MasterPort, err = strconv.Atoi(v)
		case k == "master_link_status":
			r.LinkStatus = v
		case k == "connected_slaves":
			connected, err = strconv.Atoi(v)
		case strings.HasPrefix(k, "slave") && isDigits(k[len("slave"):]):
			var rep ReplicaInfo
			rep, err = parseReplicaLine(v)
			r.Replicas = append(r.Replicas, rep)
		}
		if err != nil {
			return Replication{}, fmt.Errorf("info replication: %s: %w", k, err)
		}
	}
	switch r.Role {
	case RoleMaster, RoleReplica:
	case "":
		return Replication{}, errors.New("info replication: no role")
	default:
		return Replication{}, fmt.Errorf("info replication: unknown role %q", r.Role)
	}
	if connected >= 0 && connected != len(r.Replicas) {
		return Replication{}, fmt.Errorf("info replication: connected_slaves:%d but %d slave lines", connected, len(r.Replicas))
	}
	return r, nil
}

// parseReplicaLine parses "ip=…,port=…,state=…,offset=…,lag=…".
func parseReplicaLine(v string) (ReplicaInfo, error) {
	var rep ReplicaInfo
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "ip":
			rep.IP = val
		case "port":
			rep.Port, err = strconv.Atoi(val)
		case "state":
			rep.State = val
		case "offset":
			rep.Offset, err = strconv.ParseInt(val, 10, 64)
		case "lag":
			rep.Lag, err = strconv.ParseInt(val, 10, 64)
		}
		if err != nil {
			return ReplicaInfo{}, fmt.Errorf("%s=%q: %w", k, val, err)
		}
	}
	if rep.IP == "" || rep.Port == 0 {
		return ReplicaInfo{}, fmt.Errorf("no ip or port in %q", v)
	}
	return rep, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ClientReplication asks an open client for INFO replication.
func ClientReplication(ctx context.Context, c redis.Cmdable) (Replication, error) {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return Replication{}, fmt.Errorf("info replication: %w", err)
	}
	return ParseReplication(info)
}

// GetReplication dials the member at addr and asks for INFO replication.
func GetReplication(ctx context.Context, addr, password string) (Replication, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(addr, password))
	defer c.Close()
	r, err := ClientReplication(ctx, c)
	if err != nil {
		return Replication{}, fmt.Errorf("%s: %w", addr, err)
	}
	return r, nil
}

// Ping dials the member at addr, authenticates and sends PING.
func Ping(ctx context.Context, addr, password string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(addr, password))
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping %s: %w", addr, err)
	}
	return nil
}

// ReplicaOf makes the member at addr a replica of primary (host:port).
func ReplicaOf(ctx context.Context, addr, password, primary string) error {
	host, port, err := net.SplitHostPort(primary)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("replicaof on %s: primary address %q: %w", addr, primary, errBadAddr(err))
	}
	return oneCommand(ctx, addr, password, "REPLICAOF", host, port)
}

// Demote makes the member at addr, a primary that lost its role, a replica
// of primary at once, so it never takes writes beside the new one. It is
// ReplicaOf under the name the coordinator's healing uses.
func Demote(ctx context.Context, addr, password, primary string) error {
	if err := ReplicaOf(ctx, addr, password, primary); err != nil {
		return fmt.Errorf("demote: %w", err)
	}
	return nil
}

// PromoteNoOne makes the member at addr a master (REPLICAOF NO ONE). Only
// for members no Sentinel watches: Sentinel owns promotions of the others.
func PromoteNoOne(ctx context.Context, addr, password string) error {
	return oneCommand(ctx, addr, password, "REPLICAOF", "NO", "ONE")
}

func oneCommand(ctx context.Context, addr, password string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(addr, password))
	defer c.Close()
	if err := c.Do(ctx, args...).Err(); err != nil {
		return fmt.Errorf("%s on %s: %w", cmdName(args), addr, err)
	}
	return nil
}

// cmdName is the command's name and, for a two-word command, its
// subcommand; never the arguments (CONFIG SET values, AUTH).
func cmdName(args []any) string {
	if len(args) == 0 {
		return ""
	}
	name := fmt.Sprint(args[0])
	switch strings.ToUpper(name) {
	case "CONFIG", "CLIENT", "SENTINEL":
		if len(args) > 1 {
			name += " " + fmt.Sprint(args[1])
		}
	case "REPLICAOF":
		for _, a := range args[1:] {
			name += " " + fmt.Sprint(a)
		}
	}
	return name
}

func errBadAddr(err error) error {
	if err != nil {
		return err
	}
	return errors.New("want host:port")
}
