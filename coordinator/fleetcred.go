package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// fleetCredController gives every addon without a fleet credential (one
// created before the credential existed) its own: the leader picks it
// (NewPassword) and commits command 27, then the agents apply it live to
// the running members (agent/fleetauth.go: the fleet's user created, the
// app's user confined, the sentinels' password set) without a restart.
// It runs on the leader after the barrier, at once and then every
// fleetCredEvery, so a migration interrupted by a leader change resumes
// with the next leader; while some coordinator cannot apply command 27 yet
// (an older release: Store.Supports) it waits.
type fleetCredController struct {
	store *Store
	log   *slog.Logger
	every time.Duration
}

// fleetCredEvery is how often the leader looks for addons without one.
const fleetCredEvery = 5 * time.Second

func (c *fleetCredController) Name() string { return "fleet-credential" }

func (c *fleetCredController) Run(ctx context.Context) {
	every := c.every
	if every <= 0 {
		every = fleetCredEvery
	}
	runEvery(ctx, c.log, every, "addons without a fleet credential wait until every coordinator applies command 27",
		"fleet credential not given yet", c.pass)
}

// pass gives one to each addon that has none.
func (c *fleetCredController) pass(ctx context.Context) error {
	var missing []string
	c.store.FSM().Read(func(s *State, _ uint64) {
		for id, a := range s.Addons {
			if a.FleetPassword.IsZero() {
				missing = append(missing, id)
			}
		}
	})
	sort.Strings(missing)
	for _, id := range missing {
		pw, err := NewPassword()
		if err != nil {
			return err
		}
		if _, err := c.store.Apply(ctx, CmdAddonFleetCredential, AddonFleetCredentialCmd{AddonID: id, FleetPassword: pw}); err != nil {
			if errors.Is(err, api.ErrNotFound) {
				continue // removed meanwhile
			}
			return err
		}
		c.log.Info("fleet credential given to an addon created before it; the agents apply it live", "addon", id)
	}
	return nil
}
