package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator"
)

// Version is set at build time.
var Version = "dev"

type globals struct {
	socket  string
	config  string
	json    bool
	timeout time.Duration
}

// NewRoot returns the command tree, named name (cacheplane or
// cacheplane-coordinator: both binaries carry every command).
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
	pf.StringVar(&g.socket, "socket", "", "admin socket of a coordinator (default: $CACHEPLANE_SOCKET, else the socket named by the coordinator config, else "+coordinator.DefaultSocketPath+")")
	pf.StringVar(&g.config, "config", "", "coordinator config file (default: $CACHEPLANE_CONFIG, else "+coordinator.DefaultConfigPath+")")
	pf.BoolVar(&g.json, "json", false, "print JSON instead of tables")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "give up after this long")
	root.AddCommand(
		serveCmd(g),
		plansCmd(g), enginesCmd(g), addonsAddCmd(g), addonsCmd(g), addonsInfoCmd(g), addonsRemoveCmd(g), addonsUpgradeCmd(g), addonsUpgradeEngineCmd(g), envCmd(g),
		hostsCmd(g), operationsCmd(g), operationsCancelCmd(g), statsCmd(g), settingsCmd(g), drainCmd(g, true), drainCmd(g, false), membersCmd(g), joinCmd(g), leaveCmd(g),
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
	return coordinator.DefaultConfigPath, false
}

// socketPath resolves the admin socket: flag, environment, config, default.
func (g *globals) socketPath() string {
	if g.socket != "" {
		return g.socket
	}
	if s := os.Getenv("CACHEPLANE_SOCKET"); s != "" {
		return s
	}
	path, explicit := g.configPath()
	if cfg, err := coordinator.LoadConfigFile(path, explicit); err == nil && cfg.Socket != "" {
		return cfg.Socket
	}
	return coordinator.DefaultSocketPath
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
