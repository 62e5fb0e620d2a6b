// Command cacheplane-agent runs the agent of one host: it registers the host
// with the coordinator, runs the members assigned to it in containerd and
// reports their state. See package agent.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/agent"
	"github.com/cacheplane/cacheplane/internal/sdnotify"
)

// Version is set at build time (-ldflags -X).
var Version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "cacheplane-agent:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		configPath                                               string
		hostID, address, publicAddress, zone, joinToken, dataDir string
		socket, namespace, imageDir, logLevel                    string
		metricsAddr                                              string
		promoteMaxLag                                            int64
		labels, coordinators                                     []string
		memoryMB                                                 int
		heartbeat, restartDelay, maxRestartDelay, waitFor        time.Duration
	)
	d := agent.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "cacheplane-agent",
		Short: "Run the cacheplane agent of this host",
		Long: `Run the cacheplane agent of this host in the foreground.

It registers the host with the coordinator (any member; it follows the leader
and moves to another member when one cannot be reached), runs the members
assigned to this host in containerd and reports their state. Stopping the
agent never stops a member; a restarted agent re-attaches to them.

Configuration comes from --config (JSON; every field optional, defaults in
agent.DefaultConfig), then these flags override it.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		RunE: func(cmd *cobra.Command, _ []string) error {
			explicit := cmd.Flags().Changed("config")
			cfg, err := agent.LoadConfigFile(configPath, explicit)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("host-id") {
				cfg.HostID = hostID
			}
			if f.Changed("address") {
				cfg.Address = address
			}
			if f.Changed("public-address") {
				cfg.PublicAddress = publicAddress
			}
			if f.Changed("label") {
				m, err := agent.ParseLabels(labels)
				if err != nil {
					return err
				}
				if cfg.Labels == nil {
					cfg.Labels = map[string]string{}
				}
				for k, v := range m {
					cfg.Labels[k] = v
				}
			}
			if f.Changed("zone") {
				if cfg.Labels == nil {
					cfg.Labels = map[string]string{}
				}
				cfg.Labels["zone"] = zone
			}
			if f.Changed("memory-mb") {
				cfg.MemoryMB = memoryMB
			}
			if f.Changed("coordinator") {
				cfg.Coordinators = nil
				for _, c := range coordinators {
					for _, a := range strings.Split(c, ",") {
						if a = strings.TrimSpace(a); a != "" {
							cfg.Coordinators = append(cfg.Coordinators, a)
						}
					}
				}
			}
			if f.Changed("join-token") {
				cfg.JoinToken = joinToken
			}
			if f.Changed("data-dir") {
				cfg.DataDir = dataDir
			}
			if f.Changed("containerd-socket") {
				cfg.ContainerdSocket = socket
			}
			if f.Changed("namespace") {
				cfg.Namespace = namespace
			}
			if f.Changed("image-dir") {
				cfg.ImageDir = imageDir
			}
			if f.Changed("heartbeat-interval") {
				cfg.HeartbeatInterval = agent.Duration(heartbeat)
			}
			if f.Changed("assignments-wait") {
				cfg.AssignmentsWait = agent.Duration(waitFor)
			}
			if f.Changed("restart-delay") {
				cfg.RestartDelay = agent.Duration(restartDelay)
			}
			if f.Changed("max-restart-delay") {
				cfg.MaxRestartDelay = agent.Duration(maxRestartDelay)
			}
			if f.Changed("log-level") {
				cfg.LogLevel = logLevel
			}
			if f.Changed("metrics-addr") {
				cfg.MetricsAddr = metricsAddr
			}
			if f.Changed("promote-max-lag-bytes") {
				cfg.PromoteMaxLagBytes = promoteMaxLag
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			log := agent.NewLogger(os.Stderr, cfg.LogLevel)
			ctx := cmd.Context()
			// systemd (Type=notify, WatchdogSec): READY once registered
			// and re-attached to the members; WATCHDOG=1 while the
			// heartbeat and alive loops turn. No-ops outside systemd.
			wd, err := sdnotify.NewWatchdog(log.With("component", "watchdog"))
			if err != nil {
				return err
			}
			a, err := agent.New(ctx, cfg, agent.Options{Logger: log, Watchdog: wd})
			if err != nil {
				return err
			}
			wdCtx, stopWD := context.WithCancel(ctx)
			go wd.Run(wdCtx)
			runErr := a.Run(ctx)
			stopWD()
			_ = sdnotify.Stopping()
			if err := a.Close(); err != nil && runErr == nil {
				runErr = fmt.Errorf("shutdown: %w", err)
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", agent.DefaultConfigPath, "JSON configuration file (missing is fine at the default path)")
	f.StringVar(&hostID, "host-id", d.HostID, "this host's id, stable across restarts")
	f.StringVar(&address, "address", d.Address, "the host's IP address: members bind to it")
	f.StringVar(&publicAddress, "public-address", d.PublicAddress, "the host's address on the internet side, where addons with internet access are also published (empty: none)")
	f.StringVar(&zone, "zone", "", "zone label of the host (spreads members across zones)")
	f.StringArrayVar(&labels, "label", nil, "host label key=value (repeatable)")
	f.IntVar(&memoryMB, "memory-mb", 0, "memory the scheduler may place here, in MB (0 = detect the host's total)")
	f.StringArrayVar(&coordinators, "coordinator", d.Coordinators, "coordinator peer API address host:port (repeatable or comma-separated)")
	f.StringVar(&joinToken, "join-token", "", "join token (cacheplane hosts-token) for the first start; unused once the agent has its certificate")
	f.StringVar(&dataDir, "data-dir", d.DataDir, "members' configs and data, and their logs")
	f.StringVar(&socket, "containerd-socket", d.ContainerdSocket, "containerd's socket")
	f.StringVar(&namespace, "namespace", "", "containerd namespace (default cacheplane-<host-id>)")
	f.StringVar(&imageDir, "image-dir", d.ImageDir, "locally built images to import (make images)")
	f.DurationVar(&heartbeat, "heartbeat-interval", time.Duration(d.HeartbeatInterval), "how often to report members")
	f.DurationVar(&waitFor, "assignments-wait", time.Duration(d.AssignmentsWait), "longest wait of one blocking assignments query")
	f.DurationVar(&restartDelay, "restart-delay", time.Duration(d.RestartDelay), "wait before starting an exited member again (doubles while it keeps failing)")
	f.DurationVar(&maxRestartDelay, "max-restart-delay", time.Duration(d.MaxRestartDelay), "longest wait before starting an exited member again")
	f.StringVar(&logLevel, "log-level", d.LogLevel, "debug, info, warn or error")
	f.Int64Var(&promoteMaxLag, "promote-max-lag-bytes", 0, "a replica further behind its primary than this (bytes) is never promoted (0 = 8 MiB)")
	f.StringVar(&metricsAddr, "metrics-addr", d.MetricsAddr, `Prometheus /metrics address host:port; ":port" = this host's address if loopback, else 127.0.0.1; "off" disables`)
	return cmd
}
