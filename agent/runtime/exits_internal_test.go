package runtime

import (
	"testing"
	"time"

	tasktypes "github.com/containerd/containerd/api/types/task"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The exit watcher's reconcile reads one task list and says which process
// believed running has died, with what it knows of the exit.
func TestExitOf(t *testing.T) {
	now := time.Unix(2000, 0)
	exited := time.Unix(1990, 0)
	for _, tt := range []struct {
		name     string
		p        *tasktypes.Process
		wantDead bool
		wantCode int
		wantAt   time.Time
	}{
		{"still running, same pid", &tasktypes.Process{Status: tasktypes.Status_RUNNING, Pid: 42}, false, 0, time.Time{}},
		{"paused counts as running", &tasktypes.Process{Status: tasktypes.Status_PAUSED, Pid: 42}, false, 0, time.Time{}},
		{"no task any more", nil, true, -1, now},
		{"stopped, with its status and time", &tasktypes.Process{Status: tasktypes.Status_STOPPED, Pid: 42, ExitStatus: 137, ExitedAt: timestamppb.New(exited)}, true, 137, exited},
		{"stopped, no time", &tasktypes.Process{Status: tasktypes.Status_STOPPED, Pid: 42, ExitStatus: 1}, true, 1, now},
		{"another process runs now", &tasktypes.Process{Status: tasktypes.Status_RUNNING, Pid: 43}, true, -1, now},
		{"created, not started", &tasktypes.Process{Status: tasktypes.Status_CREATED}, true, -1, now},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, at, dead := exitOf(tt.p, 42, now)
			if dead != tt.wantDead || code != tt.wantCode || !at.Equal(tt.wantAt) {
				t.Fatalf("exitOf = %d %v %v; want %d %v %v", code, at, dead, tt.wantCode, tt.wantAt, tt.wantDead)
			}
		})
	}
}
