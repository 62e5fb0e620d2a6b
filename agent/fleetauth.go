package agent

import (
	"context"
	"sync"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// fleetAuth remembers, per member, the fleet credential the agent applied
// live to its running process (redisctl.ApplyACL on a redis member,
// redisctl.ApplySentinelAuth on a sentinel), so each process gets it once
// per agent run. A new process needs nothing: its rendered file says the
// same (redis.conf is rewritten in place; a sentinel created with the
// credential has it in its sentinel.conf).
//
// This is how an addon created before the fleet credential existed
// migrates: the leader gives it one (coordinator command 27), the
// assignments carry it, and the agent applies it without a restart and
// without closing any client connection.
type fleetAuth struct {
	mu      sync.Mutex
	applied map[string]string // member id -> digest of the credential applied
}

func newFleetAuth() *fleetAuth { return &fleetAuth{applied: map[string]string{}} }

func (f *fleetAuth) done(id string, fleet api.Secret) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[id] == hashOf(fleet)
}

func (f *fleetAuth) set(id string, fleet api.Secret) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied[id] = hashOf(fleet)
}

func (f *fleetAuth) forget(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.applied, id)
}

// applyFleetAuth makes the running member of p use the addon's fleet
// credential (see fleetAuth). It is a no-op for HAProxy (its check's
// credential is in its file, read at its next start) and when the
// credential was applied already.
func (a *Agent) applyFleetAuth(ctx context.Context, p memberPlan) error {
	as := p.as
	if as.FleetPassword.IsZero() || a.fleet.done(as.MemberID, as.FleetPassword) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	switch as.Role {
	case api.RoleRedis:
		migrated, err := redisctl.ApplyACL(ctx, p.probe, as.Password.Reveal(), as.FleetPassword.Reveal())
		if err != nil {
			return err
		}
		if migrated {
			a.log.Info("fleet credential applied live: the fleet's user created, the app's user confined",
				"member", as.MemberID, "addon", as.AddonID)
		}
	case api.RoleSentinel:
		if err := redisctl.ApplySentinelAuth(ctx, p.probe, as.MasterName, as.FleetPassword.Reveal()); err != nil {
			return err
		}
	default:
		return nil
	}
	a.fleet.set(as.MemberID, as.FleetPassword)
	return nil
}
