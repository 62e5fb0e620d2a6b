package operation

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Topology is what the topology decisions read about one HA addon.
type Topology struct {
	Addon    api.Addon
	Hosts    map[string]api.Host
	Observed map[string]Observed
	// Majority is the redis member the sentinels name the primary at their
	// highest configuration epoch, by at least two of them (the quorum)
	// or by every one that answered ("" when not asked or unknown), and
	// Votes how many named it. Recording follows Majority; demoting a
	// stray or re-pointing a sentinel needs Votes ≥ Quorum, so one stale
	// sentinel alone can never get the real primary demoted.
	Majority string
	Votes    int
	// Named is each answering sentinel's primary (member address) and the
	// epoch it was named at, by sentinel address (when asked).
	Named map[string]NamedPrimary
	// StaleSince is when each sentinel was first seen naming an older
	// primary than the others (kept by the caller between passes).
	StaleSince map[string]time.Time
	// StraySince is when each member was first seen answering as a
	// master beside the agreed primary (kept by the caller between passes).
	StraySince map[string]time.Time
	// Switching is true while the addon's operation runs a planned
	// switchover (the two masters there are the switchover's own).
	Switching bool
	Now       time.Time
}

// Quorum is how many sentinels must name the primary before a stray is
// demoted or a sentinel re-pointed (the addon's sentinel quorum).
const Quorum = 2

// StrayGrace is how long a second master is tolerated before it is
// demoted: long enough for a switchover to demote its old primary itself
// (within ~1 s of the promotion), short enough that the stray takes few
// writes. The entrypoint routes to one master (the first that answers as
// one), so a stray rarely gets a write in that time at all.
const StrayGrace = time.Second

// Masters lists the addon's redis members observed answering as masters.
func (t Topology) masters() []string {
	var out []string
	for _, m := range t.Addon.Members {
		if m.Role != api.RoleRedis {
			continue
		}
		if o := t.Observed[m.ID]; o.alive() && o.RedisRole == "master" {
			out = append(out, m.ID)
		}
	}
	sort.Strings(out)
	return out
}

// NeedsSentinels says whether what the agents report disagrees with the
// recorded primary (another member answers as a master, or the recorded
// one answers as a replica), so the sentinels must be asked who the
// primary is.
func NeedsSentinels(t Topology) bool {
	prim, _ := Primary(t.Addon)
	for _, m := range t.Addon.Members {
		if m.Role != api.RoleRedis {
			continue
		}
		o := t.Observed[m.ID]
		if !o.alive() || o.RedisRole == "" {
			continue
		}
		if (o.RedisRole == "master") != (m.ID == prim.ID) {
			return true
		}
	}
	return false
}

// NamedPrimary is one sentinel's answer: the address it names the primary
// and the configuration epoch of that decision.
type NamedPrimary struct {
	Addr  string
	Epoch int64
}

// StaleGrace is how long a sentinel may name an older primary than the
// others before it is pointed at the current one: Sentinel spreads a
// failover through hello messages within a couple of seconds; one that has
// not heard of it by then cannot (it watches a primary that is gone).
// Pointing one that was merely slow at the current primary costs nothing.
const StaleGrace = 2 * time.Second

// StaleSentinels lists the sentinels to point at primary (an address): those
// naming another primary at an older epoch than latest for StaleGrace, and
// returns the updated StaleSince.
func StaleSentinels(t Topology, primary string, latest int64) ([]string, map[string]time.Time) {
	since := map[string]time.Time{}
	if t.Votes < Quorum {
		return nil, since
	}
	var out []string
	for s, n := range t.Named {
		if n.Addr == primary || n.Epoch >= latest {
			continue
		}
		at, ok := t.StaleSince[s]
		if !ok {
			at = t.Now
		}
		since[s] = at
		if t.Now.Sub(at) >= StaleGrace {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out, since
}

// Reconciled is what Reconcile decided.
type Reconciled struct {
	// Record is the member to record as the primary ("" keeps the record).
	Record string
	// Demote are stray masters to make replicas of Primary now.
	Demote  []string
	Primary string
	// Stray is the updated StraySince (members still stray, with since).
	Stray map[string]time.Time
	// Why explains a decision not to act ("" when nothing to say).
	Why string
}

// Reconcile decides from the sentinels' majority: the member they name is
// recorded as the primary when the record differs; any other member that
// answers as a master beside it is a stray and is demoted once it has been
// one for StrayGrace — but only while the named primary is itself seen
// serving as a master (never demote towards a primary that is not there),
// and never during a planned switchover.
func Reconcile(t Topology) Reconciled {
	r := Reconciled{Stray: map[string]time.Time{}}
	if t.Majority == "" {
		r.Why = "no majority of the sentinels names a primary"
		return r
	}
	named, ok := member(t.Addon, t.Majority)
	if !ok || named.Role != api.RoleRedis {
		r.Why = fmt.Sprintf("the sentinels name %s, which is not a redis member of the addon", t.Majority)
		return r
	}
	r.Primary = named.ID
	if prim, _ := Primary(t.Addon); prim.ID != named.ID {
		r.Record = named.ID
	}
	if o := t.Observed[named.ID]; !o.alive() || o.RedisRole != "master" {
		r.Why = named.ID + " is named the primary but not seen serving as one yet"
		return r
	}
	if t.Votes < Quorum {
		r.Why = fmt.Sprintf("only %d sentinel(s) name %s: not enough to demote anything", t.Votes, named.ID)
		return r
	}
	for _, id := range t.masters() {
		if id == named.ID {
			continue
		}
		since, ok := t.StraySince[id]
		if !ok {
			since = t.Now
		}
		r.Stray[id] = since
		if !t.Switching && t.Now.Sub(since) >= StrayGrace {
			r.Demote = append(r.Demote, id)
		}
	}
	return r
}

// FailoverReason says why the recorded primary must be failed over now
// ("" when it must not): its host is lost, or its agent reports its
// process dead or unresponsive (frozen, not serving its address). A busy
// primary — alive, accepting connections, answering late — is never a
// reason. Both are certain knowledge of the fleet, unlike a late PING.
func FailoverReason(t Topology) string {
	prim, ok := Primary(t.Addon)
	if !ok {
		return ""
	}
	// Only towards a replica that was in sync when last seen (a replica
	// in sync, serving, within InSyncBytes of the primary's offset):
	// Sentinel itself only refuses replicas disconnected for 10 ×
	// down-after (300 s), so a forced failover could otherwise promote
	// one minutes behind.
	p := t.Observed[prim.ID]
	inSync := false
	for _, m := range t.Addon.Members {
		o := t.Observed[m.ID]
		if m.Role == api.RoleRedis && m.ID != prim.ID && o.alive() && o.RedisRole == "slave" && p.Offset-o.Offset <= InSyncBytes {
			inSync = true
		}
	}
	if !inSync {
		return ""
	}
	// Only a lost host (nothing on it answers): a host that is merely
	// silent (its agent cut off or restarting) may still serve, and a
	// failover of a serving primary loses the writes it takes meanwhile.
	if h := t.Hosts[prim.HostID]; h.State == api.HostDown && h.Lost {
		return "host " + h.ID + " of primary " + prim.ID + " is lost"
	}
	o := t.Observed[prim.ID]
	switch {
	case !o.Seen:
	case o.State == api.MemberFailed || o.State == api.MemberStopped:
		return "primary " + prim.ID + " process is dead (" + o.State + ")"
	case o.State == api.MemberUnresponsive:
		return "primary " + prim.ID + " is unresponsive: " + o.Detail
	}
	return ""
}

// EntrypointHolder returns the haproxy member that should hold the
// addon's VIP when its holder's host is down or draining, or none holds
// it ("" keeps the holder).
func EntrypointHolder(t Topology) string {
	candidate := ""
	for _, m := range t.Addon.Members {
		if m.Role != api.RoleHAProxy {
			continue
		}
		ready := t.Hosts[m.HostID].State == api.HostReady
		if m.Active && ready {
			return ""
		}
		if !m.Active && ready && candidate == "" {
			candidate = m.ID
		}
	}
	return candidate
}

// InSyncBytes is how far (replication offset) a replica may be behind its
// primary's last reported offset and still count as in sync: reports are
// taken up to a heartbeat apart, so a busy addon's replica always lags a
// little in them.
const InSyncBytes = 1 << 20

// Health is what a client would check of the addon: "ok", or "degraded: "
// and why — a starter whose node does not serve; for HA plans: not exactly
// one master, the master not the recorded primary, a replica not serving
// as one or too far behind, a sentinel or haproxy not running.
func Health(t Topology) string {
	var why []string
	prim, _ := Primary(t.Addon)
	masters := t.masters()
	redis := 0
	for _, m := range t.Addon.Members {
		o := t.Observed[m.ID]
		switch {
		case m.Role != api.RoleRedis:
			if !o.Seen || o.State != api.MemberRunning {
				why = append(why, m.ID+" "+describe(o))
			}
			continue
		case !o.alive():
			why = append(why, m.ID+" "+describe(o))
		case m.ID != prim.ID && o.RedisRole != "slave":
			why = append(why, m.ID+" is not a replica ("+describe(o)+")")
		case m.ID != prim.ID:
			if p := t.Observed[prim.ID]; p.alive() && p.Offset-o.Offset > InSyncBytes {
				why = append(why, fmt.Sprintf("%s is %d bytes behind", m.ID, p.Offset-o.Offset))
			}
		}
		redis++
	}
	switch {
	case len(masters) == 0 && redis > 0:
		why = append([]string{"no master"}, why...)
	case len(masters) > 1:
		why = append([]string{fmt.Sprintf("%d masters (%s)", len(masters), strings.Join(masters, ", "))}, why...)
	case len(masters) == 1 && masters[0] != prim.ID:
		why = append([]string{masters[0] + " answers as the master, " + prim.ID + " is recorded"}, why...)
	}
	if len(why) == 0 {
		return "ok"
	}
	return "degraded: " + strings.Join(why, "; ")
}
