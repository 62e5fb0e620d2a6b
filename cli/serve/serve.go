// Package serve is the coordinator daemon's command, `cacheplane-coordinator
// serve`: flags over the config file, then coordinator.Start until a signal,
// telling systemd READY=1 once started and STOPPING=1 on the way out.
// It lives apart from package cli so that the operator CLI (cmd/cacheplane)
// links no Raft and no bolt: only cmd/coordinator registers it
// (cli.AddDaemonCommand).
package serve

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/cli"
	"github.com/cacheplane/cacheplane/coordinator"
	"github.com/cacheplane/cacheplane/internal/sdnotify"
)

// Command returns the serve command; the root's --config and --socket
// flags come through g.
func Command(g cli.Flags) *cobra.Command {
	var (
		id, dataDir, raftAddr, httpAddr, tokenFile, logLevel, vipCIDR, entrypointMode string
		appHookCommand, appHookURL                                                    string
		backupDir, backupKeysFile, backupSpec, backupTZ                               string
		stateKeysFile, dashboardListen                                                string
		hostDownAfter, hostSuspectAfter, healAfter, agentCertTTL                      time.Duration
		backupWindow, backupCheckEvery, backupJobTimeout                              time.Duration
		passwordGrace, addonCertTTL                                                   time.Duration
		bootstrap, memberTLS                                                          bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a coordinator member (Raft, admin socket, peer API)",
		Long: `Run a coordinator member in the foreground.

The first member of a new cluster starts with --bootstrap; others start
without it and are added with "cacheplane join PEER_HTTP_ADDR --token TOKEN" (a token of "cacheplane members-token") on their own
admin socket. Configuration comes from --config (JSON; every field optional,
defaults in coordinator.DefaultConfig), then these flags override it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, explicit := g.ConfigPath()
			cfg, err := coordinator.LoadConfigFile(path, explicit)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("id") {
				cfg.ID = id
			}
			if f.Changed("data-dir") {
				cfg.DataDir = dataDir
			}
			if f.Changed("raft-addr") {
				cfg.RaftAddr = raftAddr
			}
			if f.Changed("http-addr") {
				cfg.HTTPAddr = httpAddr
			}
			if f.Changed("dashboard-listen") {
				cfg.DashboardListen = dashboardListen
			}
			if s := g.SocketFlag(); s != "" {
				cfg.Socket = s
			}
			if f.Changed("bootstrap") {
				cfg.Bootstrap = bootstrap
			}
			if f.Changed("cluster-token-file") {
				cfg.ClusterTokenFile = tokenFile
			}
			if f.Changed("agent-cert-ttl") {
				cfg.AgentCertTTL = coordinator.Duration(agentCertTTL)
			}
			if f.Changed("entrypoint-cidr") {
				cfg.EntrypointCIDR = vipCIDR
			}
			if f.Changed("entrypoint-mode") {
				cfg.EntrypointMode = entrypointMode
			}
			if f.Changed("addon-cert-ttl") {
				cfg.AddonCertTTL = coordinator.Duration(addonCertTTL)
			}
			if f.Changed("member-tls") {
				cfg.MemberTLS = memberTLS
			}
			if f.Changed("host-down-after") {
				cfg.HostDownAfter = coordinator.Duration(hostDownAfter)
			}
			if f.Changed("host-suspect-after") {
				cfg.HostSuspectAfter = coordinator.Duration(hostSuspectAfter)
			}
			if f.Changed("heal-after") {
				cfg.HealAfter = coordinator.Duration(healAfter)
			}
			if f.Changed("log-level") {
				cfg.LogLevel = logLevel
			}
			if f.Changed("app-hook-command") {
				cfg.AppHookCommand = strings.Fields(appHookCommand)
			}
			if f.Changed("app-hook-url") {
				cfg.AppHookURL = appHookURL
			}
			if f.Changed("password-grace") {
				cfg.PasswordGrace = coordinator.Duration(passwordGrace)
			}
			if f.Changed("backup-dir") {
				cfg.BackupStore = backupstore.Config{Kind: backupstore.KindLocal, Dir: backupDir}
			}
			if f.Changed("backup-keys-file") {
				cfg.BackupKeysFile = backupKeysFile
			}
			if f.Changed("state-keys-file") {
				cfg.StateKeysFile = stateKeysFile
			}
			if f.Changed("backup-schedule") {
				cfg.BackupSchedule.Spec = backupSpec
			}
			if f.Changed("backup-tz") {
				cfg.BackupSchedule.TZ = backupTZ
			}
			if f.Changed("backup-window") {
				cfg.BackupSchedule.Window = coordinator.Duration(backupWindow)
			}
			if f.Changed("backup-check-every") {
				cfg.BackupCheckEvery = coordinator.Duration(backupCheckEvery)
			}
			if f.Changed("backup-job-timeout") {
				cfg.BackupJobTimeout = coordinator.Duration(backupJobTimeout)
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			log := coordinator.NewLogger(os.Stderr, cfg.LogLevel)
			wd, err := sdnotify.NewWatchdog(log)
			if err != nil {
				return err
			}
			c, err := coordinator.Start(cfg, log, os.Stderr)
			if err != nil {
				return err
			}
			// Start returned: Raft runs and the admin socket listens. Under
			// systemd (Type=notify) this ends `systemctl start`; the
			// watchdog pings while the process lives (main loops register
			// with it when they are wired: issue 14).
			if err := sdnotify.Ready("serving: admin socket " + cfg.Socket); err != nil {
				log.Warn("systemd notification", "err", err)
			}
			wctx, stopWD := context.WithCancel(cmd.Context())
			wdDone := make(chan struct{})
			go func() { defer close(wdDone); wd.Run(wctx) }()
			// The state loop: every few seconds a read of the replicated
			// state (the FSM's lock, which every handler and controller
			// takes) must come back; a deadlocked coordinator stops the
			// pings and systemd restarts it. A cluster without a leader
			// still pings: a restart would not bring the quorum back.
			stateDone := make(chan struct{})
			go func() { defer close(stateDone); pingState(wctx, wd, c) }()
			defer func() { <-stateDone }()
			<-cmd.Context().Done()
			log.Info("shutting down")
			if err := sdnotify.Stopping(); err != nil {
				log.Warn("systemd notification", "err", err)
			}
			stopWD()
			<-wdDone
			if err := c.Close(); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			return nil
		},
	}
	d := coordinator.DefaultConfig()
	f := cmd.Flags()
	f.StringVar(&id, "id", d.ID, "member id, stable across restarts")
	f.StringVar(&dataDir, "data-dir", d.DataDir, "Raft log, stable store and snapshots")
	f.StringVar(&raftAddr, "raft-addr", d.RaftAddr, "Raft bind and advertise address")
	f.StringVar(&httpAddr, "http-addr", d.HTTPAddr, "peer API address (forwarding, joins)")
	f.StringVar(&dashboardListen, "dashboard-listen", d.DashboardListen, "web dashboard address (loopback: reach it with ssh -L; \"\" turns it off; log in with cacheplane ui-token)")
	f.BoolVar(&bootstrap, "bootstrap", false, "form a new one-member cluster if this member has no Raft state")
	f.StringVar(&tokenFile, "cluster-token-file", "", "the cluster token of a release before identities: used only until this member is secured (cacheplane cluster-secure; docs/security.md)")
	f.DurationVar(&agentCertTTL, "agent-cert-ttl", time.Duration(d.AgentCertTTL), "how long an agent certificate is valid (renewed after two thirds)")
	f.StringVar(&logLevel, "log-level", d.LogLevel, "debug, info, warn or error")
	f.StringVar(&vipCIDR, "entrypoint-cidr", d.EntrypointCIDR, "pool of virtual IPs for business addons' entrypoints (e.g. 127.0.1.0/24 on one machine)")
	f.StringVar(&entrypointMode, "entrypoint-mode", "haproxy", "entrypoint mode of new addons: haproxy (every connection through the HAProxy pair) or kernel (the VIP holder's kernel forwards to the primary; docs/entrypoint.md)")
	f.DurationVar(&addonCertTTL, "addon-cert-ttl", time.Duration(d.AddonCertTTL), "how long an addon's server certificate is valid (renewed after two thirds, live)")
	f.BoolVar(&memberTLS, "member-tls", d.MemberTLS, "new addons get member TLS unless addons-add says otherwise (redis, replication and sentinels on TLS only)")
	f.DurationVar(&hostDownAfter, "host-down-after", time.Duration(d.HostDownAfter), "mark a host down after this long without heartbeat")
	f.DurationVar(&hostSuspectAfter, "host-suspect-after", time.Duration(d.HostSuspectAfter), "probe a host whose liveness signal stopped this long; mark it down at once when none of its members accepts a connection (0: off)")
	f.DurationVar(&healAfter, "heal-after", time.Duration(d.HealAfter), "replace the members of a host down for this long")
	f.StringVar(&appHookCommand, "app-hook-command", "", "program (and arguments, split on spaces, no shell) run after a plan change with CACHEPLANE_ADDON_ID, CACHEPLANE_APP, CACHEPLANE_CHANGE, REDIS_URL in its environment (config app_hook_command takes an argv array)")
	f.StringVar(&appHookURL, "app-hook-url", "", "http(s) URL POSTed the same as JSON after a plan change")
	f.DurationVar(&passwordGrace, "password-grace", time.Duration(d.PasswordGrace), "how long a password rotation keeps the old password accepted once the new URL is published (addons-password-rotate --grace overrides it)")
	f.StringVar(&backupDir, "backup-dir", "", "local backup store directory (default <data-dir>/backups; coordinators and agents on several machines must share it, else configure an s3 backup_store in the config file)")
	f.StringVar(&backupKeysFile, "backup-keys-file", "", "backup encryption keyring, JSON, mode 0600 (default <data-dir>/backup-keys.json, made with a new key when missing; every coordinator of a cluster must use the same)")
	f.StringVar(&stateKeysFile, "state-keys-file", "", "keys sealing the Raft log and snapshots (they hold the addons' passwords), JSON, mode 0600 (made with a new key when missing; unset: the Raft log keeps passwords in plaintext; every coordinator of a cluster must use the same)")
	f.StringVar(&backupSpec, "backup-schedule", d.BackupSchedule.Spec, "cron spec of the daily backups, read in --backup-tz")
	f.StringVar(&backupTZ, "backup-tz", d.BackupSchedule.TZ, "time zone of the backup schedule and of retention's days")
	f.DurationVar(&backupWindow, "backup-window", time.Duration(d.BackupSchedule.Window), "spread the addons' daily backups over this long after the scheduled time")
	f.DurationVar(&backupCheckEvery, "backup-check-every", time.Duration(d.BackupCheckEvery), "how often the leader looks for due backups")
	f.DurationVar(&backupJobTimeout, "backup-job-timeout", time.Duration(d.BackupJobTimeout), "fail a backup or restore whose agent reports nothing for this long")
	return cmd
}

// pingState pings the watchdog's "state" loop after each read of the
// coordinator's replicated state, every stateCheckEvery, until ctx ends.
func pingState(ctx context.Context, wd *sdnotify.Watchdog, c *coordinator.Coordinator) {
	const stateCheckEvery = 5 * time.Second
	l := wd.Register("state", 0)
	defer l.Stop()
	t := time.NewTicker(stateCheckEvery)
	defer t.Stop()
	for {
		c.Store().FSM().Read(func(*coordinator.State, uint64) {})
		l.Ping()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
