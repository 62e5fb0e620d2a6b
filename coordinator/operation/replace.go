package operation

import (
	"fmt"
	"strings"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

// replace moves one member (op.Target) off its host: the primary role first
// leaves it (a zero-loss switchover when its host is alive, a forced
// failover when its host is lost), then a replacement starts beside it (a
// redis one as a replica of the current primary), and only once it runs is
// the old member dropped and the sentinels reset, so redundancy never goes
// lower than the loss itself. A redis member without a replica is never
// switched over: that operation fails at once with why.
func replace(v View, op api.Operation, step api.Step) Decision {
	if !v.Exists {
		return fail("the addon no longer exists")
	}
	a := v.Addon
	target, hasTarget := member(a, op.Target)
	switch step.Name {
	case StepDemote:
		if !hasTarget {
			return advance("member already gone")
		}
		if target.Role != api.RoleRedis {
			return advance("not a redis member")
		}
		prim, _ := Primary(a)
		if prim.ID != target.ID {
			return advance(prim.ID + " is the primary")
		}
		var replica api.Member
		for _, m := range a.Members {
			if m.Role == api.RoleRedis && m.ID != target.ID {
				replica = m
				break
			}
		}
		if replica.ID == "" {
			return fail(fmt.Sprintf("%s is the addon's only redis node: there is no replica to switch over to, so it cannot be moved this way", target.ID))
		}
		if h := v.Hosts[target.HostID]; h.State == api.HostDown && h.Lost {
			return paced(step, v, Decision{Kind: Run, Action: Failover{Sentinels: sentinelsOffHost(v, target.HostID)}, Then: Wait,
				Detail: fmt.Sprintf("host %s is lost: failover to %s requested; waiting for it to be recorded", target.HostID, replica.ID), RetryAfter: failoverEvery})
		}
		if o := v.Observed[replica.ID]; !o.alive() || o.RedisRole != "slave" {
			return wait(fmt.Sprintf("waiting for replica %s to serve as a replica before switching over (now: %s)", replica.ID, describe(o)))
		}
		return paced(step, v, Decision{Kind: Run, Action: Switchover{Primary: addr(v, target), Replica: addr(v, replica), Sentinels: sentinels(v)}, Then: Wait,
			Detail: "switched over to " + replica.ID + "; waiting for the new primary to be recorded", RetryAfter: switchoverEvery})
	case StepPlaceNew:
		if !hasTarget {
			return advance("member already gone")
		}
		nm, _, err := scheduler.Replace(v.Fleet, a, target.ID, []string{target.HostID})
		if err != nil {
			return wait("waiting for capacity: " + api.Message(err))
		}
		if nm.Role == api.RoleRedis {
			nm.RedisRole = "replica"
		}
		return Decision{Kind: Advance, Effect: AddMember{Member: nm}, Detail: fmt.Sprintf("%s on %s port %d", nm.ID, nm.HostID, nm.Port)}
	case StepWaitNew:
		nm, ok := member(a, op.Replacement)
		if !ok {
			return advance("no replacement")
		}
		o := v.Observed[nm.ID]
		switch {
		case o.Seen && o.State == api.MemberFailed:
			return wait(nm.ID + " failed: " + o.Detail)
		case !o.Seen || o.State != api.MemberRunning:
			return wait("waiting for " + nm.ID + " to run (now: " + describe(o) + ")")
		case nm.Role == api.RoleSentinel:
			// A sentinel counts once it knows the primary, the replicas
			// and its peers: it may be the one a failover needs next.
			prim, _ := Primary(a)
			others := 0
			for _, m := range a.Members {
				if m.Role == api.RoleSentinel && m.ID != nm.ID && m.ID != op.Target && v.Hosts[m.HostID].State != api.HostDown {
					others++
				}
			}
			return Decision{Kind: Run, Action: CheckSentinel{Addr: addr(v, nm), Primary: addr(v, prim), Replicas: servingReplicas(v), Others: others},
				Then: Advance, Detail: nm.ID + " running, knows the primary, the replicas and its peers"}
		case nm.Role != api.RoleRedis:
			return advance(nm.ID + " running")
		}
		// A redis replacement counts once it holds the data: a replica in
		// sync with a serving primary.
		if why := notInSync(v, nm.ID); why != "" {
			return wait(why)
		}
		return advance(nm.ID + " running, a replica in sync")
	case StepRemoveOld:
		if !hasTarget {
			return advance("already removed")
		}
		if target.Role == api.RoleRedis {
			// Never drop a redis member that may hold the only copy of the
			// data: the replacement must be a replica in sync with a
			// serving primary first.
			nm, ok := member(a, op.Replacement)
			if !ok {
				return wait("no replacement to take over from " + target.ID)
			}
			if why := notInSync(v, nm.ID); why != "" {
				return wait("keeping " + target.ID + " until its replacement holds the data: " + why)
			}
			if prim, _ := Primary(a); prim.ID == target.ID {
				// It became the primary again (a failover while it was
				// being replaced): hand the role to the replacement.
				if v.Hosts[target.HostID].State == api.HostDown {
					return wait(target.ID + " is the primary on a lost host: waiting for a failover")
				}
				return paced(step, v, Decision{Kind: Run, Action: Switchover{Primary: addr(v, target), Replica: addr(v, nm), Sentinels: sentinels(v)}, Then: Wait,
					Detail: target.ID + " had become the primary again: switched over to " + nm.ID + "; waiting for it to be recorded", RetryAfter: switchoverEvery})
			}
		}
		return Decision{Kind: Advance, Effect: RemoveMember{MemberID: target.ID}, Detail: target.ID + " removed"}
	case StepResetSentinel:
		role := api.Role("")
		if nm, ok := member(a, op.Replacement); ok {
			role = nm.Role
		}
		// Only a replaced sentinel must be forgotten: the sentinels count
		// every sentinel they ever met in a failover's majority. A replaced
		// redis member stays in their lists as down, which they never
		// promote; a haproxy they never knew.
		if role != api.RoleSentinel {
			return advance("no sentinel replaced: nothing to reset")
		}
		if len(sentinels(v)) == 0 {
			return advance("no sentinels")
		}
		if why := notRejoined(v); why != "" {
			return wait(why)
		}
		var live []string
		for _, m := range a.Members {
			if m.Role == api.RoleSentinel && v.Hosts[m.HostID].State != api.HostDown {
				live = append(live, addr(v, m))
			}
		}
		if len(live) == 0 {
			return wait("no sentinel on a live host to reset")
		}
		return paced(step, v, Decision{Kind: Run, Action: ResetSentinels{Sentinels: live, Members: sentinels(v), Replicas: servingReplicas(v)}, Then: Advance,
			Detail: "sentinels reset one by one: they forget the old member and know the others again", RetryAfter: resetEvery})
	}
	return fail("unknown step " + step.Name)
}

// notRejoined says which redis member has not rejoined yet ("" when every
// one serves in its recorded role). A SENTINEL RESET makes the sentinels
// forget every replica and rediscover the ones the primary lists; a member
// still answering as a master then would stay one, unseen: a stray second
// master. So the reset waits until the primary is a master and every other
// redis member a replica.
func notRejoined(v View) string {
	prim, ok := Primary(v.Addon)
	if !ok {
		return "waiting for a primary"
	}
	var waiting []string
	for _, m := range v.Addon.Members {
		// A member of a lost host cannot rejoin (it is replaced next);
		// forgetting it is what a reset is for.
		if m.Role != api.RoleRedis || v.Hosts[m.HostID].State == api.HostDown {
			continue
		}
		o := v.Observed[m.ID]
		want := "slave"
		if m.ID == prim.ID {
			want = "master"
		}
		if !o.alive() || o.RedisRole != want {
			waiting = append(waiting, fmt.Sprintf("%s (want %s, now %s)", m.ID, want, describe(o)))
		}
	}
	if len(waiting) == 0 {
		return ""
	}
	return "waiting before resetting the sentinels (they would forget a member that has not rejoined): " + strings.Join(waiting, ", ")
}

// servingReplicas lists the addresses of the redis members other than the
// recorded primary that serve as replicas (a sentinel can only be expected
// to know those).
func servingReplicas(v View) []string {
	prim, _ := Primary(v.Addon)
	var out []string
	for _, m := range v.Addon.Members {
		if o := v.Observed[m.ID]; m.Role == api.RoleRedis && m.ID != prim.ID && o.alive() && o.RedisRole == "slave" {
			out = append(out, addr(v, m))
		}
	}
	return out
}

// notInSync says why redis member id does not hold the addon's data yet
// ("" when it does): it must serve as a replica, the recorded primary as a
// master, and its offset be within InSyncBytes of the primary's.
func notInSync(v View, id string) string {
	prim, ok := Primary(v.Addon)
	if !ok {
		return "the addon has no primary"
	}
	p, o := v.Observed[prim.ID], v.Observed[id]
	switch {
	case id == prim.ID:
		return ""
	case !p.alive() || p.RedisRole != "master":
		return fmt.Sprintf("the primary %s is not serving (%s)", prim.ID, describe(p))
	case !o.alive() || o.RedisRole != "slave":
		return fmt.Sprintf("%s is not a replica yet (%s)", id, describe(o))
	case p.Offset-o.Offset > InSyncBytes:
		return fmt.Sprintf("%s is %d bytes behind the primary", id, p.Offset-o.Offset)
	}
	return ""
}

// describe is an observed member in a few words.
func describe(o Observed) string {
	switch {
	case !o.Seen:
		return "not reported"
	case o.RedisRole != "":
		return o.State + " as " + o.RedisRole
	}
	return o.State
}

// sentinelsOffHost lists the addon's sentinels not on host.
func sentinelsOffHost(v View, host string) []string {
	var ex []string
	for _, m := range v.Addon.Members {
		if m.HostID == host {
			ex = append(ex, m.ID)
		}
	}
	return sentinels(v, ex...)
}

// paced turns a mutating Run into a Wait while its last attempt is more
// recent than d.RetryAfter.
func paced(step api.Step, v View, d Decision) Decision {
	if !step.LastAttempt.IsZero() && v.Now.Sub(step.LastAttempt) < d.RetryAfter {
		return wait(step.Detail)
	}
	return d
}
