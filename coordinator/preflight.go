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
// refusal is always computed. While one request asks the scheduler for a
// plan, the others accept it if it fitted less than preflightStale ago
// instead of asking too: with 32 clients every request that found the
// window just closed placed over the whole fleet at once (at 10,000
// hosts, one placement each, all under the FSM's read lock).
type preflight struct {
	mu       sync.Mutex
	fits     map[string]time.Time
	checking map[string]bool // plans being placed by a request now
}

// preflightStale bounds how old a fit may be for a request to accept it
// while another request asks the scheduler again.
const preflightStale = 5 * time.Second

// check refuses with ErrNoCapacity a plan the fleet cannot place now; a
// fleet without hosts accepts (the operation waits for the first hosts).
func (p *preflight) check(fsm *FSM, app string, plan api.Plan, now time.Time) error {
	p.mu.Lock()
	at, ok := p.fits[plan.Name]
	age := now.Sub(at)
	if ok && age >= 0 && (age < preflightFresh || (p.checking[plan.Name] && age < preflightStale)) {
		p.mu.Unlock()
		return nil
	}
	if p.checking == nil {
		p.checking = map[string]bool{}
	}
	p.checking[plan.Name] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.checking, plan.Name)
		p.mu.Unlock()
	}()
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
