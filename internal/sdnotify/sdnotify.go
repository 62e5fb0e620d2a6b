// Package sdnotify owns cacheplane's conversation with systemd's service
// manager (sd_notify(3)): READY=1 once a daemon can serve, STOPPING=1 when it
// begins to shut down, and a Watchdog that sends WATCHDOG=1 only while every
// main loop of the daemon registered with it keeps pinging — so a stuck loop
// lets WatchdogSec= run out and systemd restarts the daemon.
//
// It is a thin layer over github.com/coreos/go-systemd/v22/daemon. Outside
// systemd (NOTIFY_SOCKET unset: a shell, a test, `make run`) every call is a
// no-op that returns nil. It does not decide when a daemon is ready or which
// loops matter: the daemons do, and call it.
//
// NOTIFY_SOCKET and WATCHDOG_USEC stay in the environment, so processes a
// daemon starts (app hooks) inherit them; the units say NotifyAccess=main, so
// systemd ignores whatever such a child sends.
package sdnotify

import (
	"fmt"
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify sends one state string; it is daemon.SdNotify, or a fake in tests.
type notifyFunc func(state string) (sent bool, err error)

func sdNotify(state string) (bool, error) { return daemon.SdNotify(false, state) }

// Ready tells systemd the daemon serves (READY=1), with status as STATUS=
// when not empty. Call it once, after the daemon can do its job.
func Ready(status string) error { return send(sdNotify, daemon.SdNotifyReady, status) }

// Stopping tells systemd the daemon began to shut down (STOPPING=1).
func Stopping() error { return send(sdNotify, daemon.SdNotifyStopping, "") }

// Status sets the one-line status `systemctl status` shows (STATUS=).
func Status(status string) error { return send(sdNotify, "", status) }

func send(notify notifyFunc, state, status string) error {
	var lines []string
	if state != "" {
		lines = append(lines, state)
	}
	if status != "" {
		// One line: sd_notify's assignments are newline-separated.
		lines = append(lines, "STATUS="+strings.ReplaceAll(status, "\n", " "))
	}
	if len(lines) == 0 {
		return nil
	}
	msg := strings.Join(lines, "\n")
	if _, err := notify(msg); err != nil {
		return fmt.Errorf("sd_notify %s: %w", lines[0], err)
	}
	return nil
}
