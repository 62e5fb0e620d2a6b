package runtime

import (
	"context"
	"fmt"
	"syscall"

	"github.com/containerd/containerd/errdefs"
)

// Signaler is an optional ability of a driver: send a signal to a member's
// process without waiting for anything. The containerd driver has it.
type Signaler interface {
	// Signal sends sig to the member's process. A death it causes is
	// reported on Exits like any other (the driver did not stop the
	// member: the agent killed it as unresponsive and restarts it through
	// its usual path). A missing container or task is ErrNotFound.
	Signal(ctx context.Context, id string, sig syscall.Signal) error
}

var _ Signaler = (*Containerd)(nil)

// Signal implements Signaler.
func (d *Containerd) Signal(ctx context.Context, id string, sig syscall.Signal) error {
	cctx, cancel := d.call(ctx, 0)
	defer cancel()
	c, err := d.client.LoadContainer(cctx, id)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("signal %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("signal %s: %w", id, err)
	}
	task, err := c.Task(cctx, nil)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("signal %s: no task: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("signal %s: %w", id, err)
	}
	if err := task.Kill(cctx, sig); err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("signal %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("signal %s: %v: %w", id, sig, err)
	}
	return nil
}
