package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
)

// Version is set at build time.
var Version = "dev"

// DefaultConfigPath and DefaultSocketPath are the coordinator's
// (coordinator.DefaultConfigPath, coordinator.DefaultSocketPath; a test
// keeps them equal): package cli must not import package coordinator, so
// that the cacheplane binary links no Raft and no bolt.
const (
	DefaultConfigPath = "/etc/cacheplane/coordinator.json"
	DefaultSocketPath = "/run/cacheplane/admin.sock"
)

// Flags is what a daemon command reads of the root's persistent flags.
type Flags interface {
	// ConfigPath is the coordinator config file: --config, else
	// $CACHEPLANE_CONFIG, else DefaultConfigPath; explicit is false for
	// the default (a missing file is then fine).
	ConfigPath() (path string, explicit bool)
	// SocketFlag is --socket as given ("" when not).
	SocketFlag() string
}

// daemonCommands are added to every root made after they are registered.
var daemonCommands []func(Flags) *cobra.Command

// AddDaemonCommand registers a command that runs a daemon (serve). Only
// the daemon's binary calls it, from an init function, so the operator
// CLI does not link the daemon's packages.
func AddDaemonCommand(f func(Flags) *cobra.Command) { daemonCommands = append(daemonCommands, f) }

func (g *globals) ConfigPath() (string, bool) { return g.configPath() }
func (g *globals) SocketFlag() string         { return g.socket }

type globals struct {
	socket  string
	config  string
	json    bool
	timeout time.Duration
}

// NewRoot returns the command tree, named name: the operator commands,
// plus the daemon commands registered with AddDaemonCommand
// (cacheplane-coordinator adds serve; cacheplane has none).
func NewRoot(name string) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           name,
		Short:         "Run and operate managed Redis-compatible caching databases",
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", "", "admin socket of a coordinator (default: $CACHEPLANE_SOCKET, else the socket named by the coordinator config, else "+DefaultSocketPath+")")
	pf.StringVar(&g.config, "config", "", "coordinator config file (default: $CACHEPLANE_CONFIG, else "+DefaultConfigPath+")")
	pf.BoolVar(&g.json, "json", false, "print JSON instead of tables")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "give up after this long")
	for _, f := range daemonCommands {
		root.AddCommand(f(g))
	}
	root.AddCommand(
		plansCmd(g), enginesCmd(g), addonsAddCmd(g), addonsCmd(g), addonsInfoCmd(g), addonsCACmd(g), addonsRemoveCmd(g), addonsUpgradeCmd(g), addonsUpgradeEngineCmd(g), envCmd(g),
		hostsCmd(g), operationsCmd(g), operationsCancelCmd(g), statsCmd(g), settingsCmd(g), drainCmd(g, true), drainCmd(g, false), membersCmd(g), membersRecoverCmd(g), joinCmd(g), leaveCmd(g), tokenCmd(g, api.TokenAgent), tokenCmd(g, api.TokenMember), hostsRemoveCmd(g), clusterSecureCmd(g),
		backupsCmd(g), backupsCreateCmd(g), backupsDownloadCmd(g), backupsRestoreCmd(g),
		addonsPasswordRotateCmd(g),
		uiTokenCmd(g),
	)
	return root
}

// Main runs the root command and exits with its status.
func Main(name string) {
	root := NewRoot(name)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error: "+api.Message(err))
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	switch {
	case errors.Is(err, api.ErrInvalid), errors.Is(err, api.ErrNotFound), errors.Is(err, api.ErrConflict),
		errors.Is(err, api.ErrPlanTooSmall), errors.Is(err, api.ErrNoCapacity):
		return 2
	case errors.Is(err, api.ErrNoSocket):
		return 3
	}
	return 1
}

func (g *globals) configPath() (string, bool) {
	if g.config != "" {
		return g.config, true
	}
	if p := os.Getenv("CACHEPLANE_CONFIG"); p != "" {
		return p, true
	}
	return DefaultConfigPath, false
}

// socketPath resolves the admin socket: flag, environment, config, default.
func (g *globals) socketPath() string {
	if g.socket != "" {
		return g.socket
	}
	if s := os.Getenv("CACHEPLANE_SOCKET"); s != "" {
		return s
	}
	path, _ := g.configPath()
	return socketFromConfig(path)
}

// socketFromConfig reads the admin socket a coordinator config file names
// as the daemon would: "socket", or <data_dir>/admin.sock when "socket" is
// set empty; DefaultSocketPath when the file is missing, unreadable or
// names neither. Other fields are not read (nor checked: the daemon does).
func socketFromConfig(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return DefaultSocketPath
	}
	var c struct {
		Socket  *string `json:"socket"`
		DataDir string  `json:"data_dir"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.Socket == nil {
		return DefaultSocketPath
	}
	if *c.Socket == "" {
		if c.DataDir == "" {
			return DefaultSocketPath
		}
		return filepath.Join(c.DataDir, "admin.sock")
	}
	return *c.Socket
}

func (g *globals) client() *api.Client {
	c := api.NewClient(g.socketPath())
	if g.timeout < c.RetryFor {
		c.RetryFor = g.timeout
	}
	return c
}

func (g *globals) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), g.timeout)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable prints an ASCII table like the product CLI's.
func printTable(w io.Writer, header []string, rows [][]string) error {
	t := tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{Symbols: tw.NewSymbols(tw.StyleASCII)})),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
	)
	h := make([]any, len(header))
	for i, s := range header {
		h[i] = s
	}
	t.Header(h...)
	for _, r := range rows {
		if err := t.Append(r); err != nil {
			return fmt.Errorf("table: %w", err)
		}
	}
	return t.Render()
}
