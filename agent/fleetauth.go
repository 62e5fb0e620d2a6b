package agent

import (
	"context"
	"sort"
	"sync"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// fleetAuth remembers, per member, the fleet credential (and, on a redis
// member, the app's passwords) the agent applied live to its running
// process (redisctl.ApplyACL on a redis member, redisctl.ApplySentinelAuth
// on a sentinel), so each process gets them once per agent run and again
// when they change: a password rotation adds its next password beside the
// URL's, then drops the old one (api.Assignment.OtherPasswords). A new
// process needs only the rotation's other passwords applied: its rendered
// file says the rest (redis.conf, rewritten in place, has the URL's
// password; a sentinel created with the credential has it in its
// sentinel.conf).
//
// This is how an addon created before the fleet credential existed
// migrates: the leader gives it one (coordinator command 27), the
// assignments carry it, and the agent applies it without a restart and
// without closing any client connection.
type fleetAuth struct {
	mu      sync.Mutex
	applied map[string]string // member id -> digest of the credentials applied
}

func newFleetAuth() *fleetAuth { return &fleetAuth{applied: map[string]string{}} }

// changed reports whether the member had others applied before (a
// change, not this agent run's first apply).
func (f *fleetAuth) changed(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[id] != ""
}

func (f *fleetAuth) done(id, digest string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[id] == digest
}

func (f *fleetAuth) set(id, digest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied[id] = digest
}

// appPasswords are the passwords a redis member's default user accepts:
// the URL's first, then a rotation's others.
func appPasswords(as api.Assignment) []string {
	out := []string{as.Password.Reveal()}
	for _, p := range as.OtherPasswords {
		if !p.IsZero() {
			out = append(out, p.Reveal())
		}
	}
	return out
}

// authDigest is what fleetAuth remembers for as: a digest of the fleet
// credential and, for a redis member, of the app's passwords (as a set).
func authDigest(as api.Assignment) string {
	if as.Role != api.RoleRedis {
		return hashOf(as.FleetPassword)
	}
	app := appPasswords(as)
	sort.Strings(app)
	return hashOf(append([]string{as.FleetPassword.Reveal()}, app...))
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
	digest := authDigest(as)
	if as.FleetPassword.IsZero() || a.fleet.done(as.MemberID, digest) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	switch as.Role {
	case api.RoleRedis:
		migrated, err := redisctl.ApplyACL(ctx, p.probe, appPasswords(as), as.FleetPassword.Reveal())
		if err != nil {
			return err
		}
		if a.fleet.changed(as.MemberID) || len(as.OtherPasswords) > 0 {
			a.log.Info("app passwords applied live", "member", as.MemberID, "addon", as.AddonID, "accepted", len(as.OtherPasswords)+1)
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
	a.fleet.set(as.MemberID, digest)
	return nil
}
