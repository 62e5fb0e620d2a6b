package coordinator

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

// preflightFresh is how long a plan that fitted the fleet is taken to fit
// again without asking the scheduler (addons-add's pre-flight).
const preflightFresh = time.Second

// preflight remembers when each plan last fitted the fleet. addons-add
// refuses at once what cannot be placed, which takes a placement over the
// whole fleet (every addon's members counted): at 100,000 addons that is
// not a per-request cost. A plan that fitted less than preflightFresh ago
// is accepted without it; if the fleet filled up meanwhile, the operation
// waits for capacity (as it does when no host is registered yet). A
// refusal is always computed.
type preflight struct {
	mu   sync.Mutex
	fits map[string]time.Time
}

// check refuses with ErrNoCapacity a plan the fleet cannot place now; a
// fleet without hosts accepts (the operation waits for the first hosts).
func (p *preflight) check(fsm *FSM, app string, plan api.Plan, now time.Time) error {
	p.mu.Lock()
	at, ok := p.fits[plan.Name]
	p.mu.Unlock()
	if ok && now.Sub(at) >= 0 && now.Sub(at) < preflightFresh {
		return nil
	}
	var (
		st       scheduler.State
		anyHosts bool
	)
	fsm.Read(func(fs *State, _ uint64) {
		if anyHosts = len(fs.Hosts) > 0; anyHosts {
			st = schedulerState(fs)
		}
	})
	if !anyHosts {
		return nil
	}
	if _, _, err := scheduler.Place(st, scheduler.Request{AddonID: app + "-0000", Plan: plan}); err != nil {
		var ce *scheduler.CapacityError
		if errors.As(err, &ce) {
			return fmt.Errorf("%w: cannot add %s for %s: %s", api.ErrNoCapacity, plan.Name, app, ce.Message)
		}
		return err
	}
	p.mu.Lock()
	if p.fits == nil {
		p.fits = map[string]time.Time{}
	}
	p.fits[plan.Name] = now
	p.mu.Unlock()
	return nil
}
