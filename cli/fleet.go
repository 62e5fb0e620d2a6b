package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
)

func hostsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "hosts",
		Short: "List the hosts of the fleet",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			hosts, err := g.client().Hosts(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), hosts)
			}
			if len(hosts) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "No host has registered yet: start cacheplane-agent on each host.")
				return nil
			}
			rows := make([][]string, 0, len(hosts))
			for _, h := range hosts {
				cpu, mem := "-", "-"
				if f := h.Figures; f != nil {
					cpu = fmt.Sprintf("%.1f%%", f.CPUPercent)
					mem = bytes(f.MemoryUsedBytes) + " / " + bytes(f.MemoryTotalBytes)
				}
				rows = append(rows, []string{h.ID, h.Address, string(h.State), fmt.Sprintf("%d MB", h.MemoryMB),
					fmt.Sprintf("%d MB", h.CommittedMB), fmt.Sprintf("%d MB", h.FreeMB), fmt.Sprint(h.Members), cpu, mem, labels(h.Labels), ago(h.LastHeartbeat)})
			}
			return printTable(cmd.OutOrStdout(), []string{"HOST", "ADDRESS", "STATE", "CAPACITY", "COMMITTED", "FREE", "MEMBERS", "CPU", "MEMORY USED", "LABELS", "LAST HEARTBEAT"}, rows)
		},
	}
}

func labels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(100*time.Millisecond).String() + " ago"
}

func operationsCmd(g *globals) *cobra.Command {
	var app, addon string
	cmd := &cobra.Command{
		Use:   "operations [--app APP] [--addon ID]",
		Short: "List operations (provision, remove, ...) and their steps",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if app != "" {
				if err := api.ValidateAppName(app); err != nil {
					return err
				}
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			ops, err := g.client().Operations(ctx, app, addon)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), ops)
			}
			if len(ops) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "No operation.")
				return nil
			}
			rows := make([][]string, 0, len(ops))
			for _, o := range ops {
				step := "-"
				if i := o.CurrentStep(); i < len(o.Steps) {
					step = fmt.Sprintf("%d/%d %s", i+1, len(o.Steps), o.Steps[i].Name)
					if d := o.Steps[i].Detail; d != "" {
						step += ": " + d
					}
				}
				if o.Error != "" {
					step += " (" + o.Error + ")"
				}
				state := string(o.State)
				if o.Stuck != "" {
					state += " (stuck: " + o.Stuck + ")"
				} else if o.CancelRequested && !o.State.Finished() {
					state += " (cancelling)"
				}
				rows = append(rows, []string{o.ID, o.AddonID, string(o.Kind), state, step, o.CreatedAt.Local().Format("2006-01-02 15:04:05")})
			}
			if err := printTable(cmd.OutOrStdout(), []string{"ID", "ADDON", "KIND", "STATE", "STEP", "CREATED"}, rows); err != nil {
				return err
			}
			if app == "" && addon == "" {
				return nil
			}
			// For one app or addon: every step with its state and times.
			rows = rows[:0]
			for _, o := range ops {
				for i, st := range o.Steps {
					rows = append(rows, []string{o.ID, fmt.Sprintf("%d %s", i+1, st.Name), string(st.State), clock(st.StartedAt), clock(st.FinishedAt), attempts(st), st.Detail})
				}
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return printTable(cmd.OutOrStdout(), []string{"OPERATION", "STEP", "STATE", "STARTED", "FINISHED", "TRIES", "DETAIL"}, rows)
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	cmd.Flags().StringVar(&addon, "addon", "", "addon id")
	return cmd
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("15:04:05.000")
}

func attempts(s api.Step) string {
	if s.Attempts == 0 {
		return "-"
	}
	return fmt.Sprint(s.Attempts)
}

func operationsCancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "operations-cancel OPERATION_ID",
		Short: "Stop an operation at its next safe point (removals cannot be cancelled)",
		Long: `Stop an operation at its next safe point. The engine finishes the step in
flight, undoes a half-done member move (a replacement placed beside the member
it was to replace is removed again), and records what was done and what was
not in the operation's error (see: cacheplane operations).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := api.ValidateMemberID("operation", args[0]); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			res, err := g.client().OperationCancel(ctx, args[0])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Message)
			return nil
		},
	}
}

func membersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the coordinator cluster's members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			st, err := g.client().Cluster(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), st)
			}
			rows := make([][]string, 0, len(st.Members))
			for _, m := range st.Members {
				role := "follower"
				if m.Leader {
					role = "leader"
				}
				rows = append(rows, []string{m.ID, role, m.RaftAddr, m.HTTPAddr, m.Suffrage})
			}
			if err := printTable(cmd.OutOrStdout(), []string{"ID", "ROLE", "RAFT ADDRESS", "HTTP ADDRESS", "SUFFRAGE"}, rows); err != nil {
				return err
			}
			if st.LeaderID == "" {
				fmt.Fprintln(cmd.OutOrStdout(), "No leader is elected right now.")
			}
			return nil
		},
	}
}

func membersRecoverCmd(g *globals) *cobra.Command {
	var confirm string
	cmd := &cobra.Command{
		Use:   "members-recover [--confirm MEMBER_ID]",
		Short: "Bring a coordinator cluster that lost its majority back, from the member behind --socket alone",
		Long: `When most coordinators are lost for good, the cluster has no leader and
never elects one: writes are refused "no leader". Run on a surviving member,
members-recover makes it a one-member cluster from its own state and it leads
at once: every entry of its log is kept; an entry the lost majority committed
that never reached it is lost. Refused while a leader is heard or any other
member answers. Without --confirm it only says what it would keep and drop.
Afterwards, add members back: empty each one's data dir, start it, join.`,
		Example: "  cacheplane --socket /run/cacheplane/coordinator.sock members-recover\n" +
			"  cacheplane --socket /run/cacheplane/coordinator.sock members-recover --confirm c3",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The member may wait out an election first, then restarts
			// Raft and waits to lead: more than a usual call.
			timeout := max(g.timeout, 90*time.Second)
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			res, err := g.client().Recover(ctx, api.RecoverRequest{Confirm: confirm})
			if err != nil {
				return err
			}
			if g.json {
				if err := printJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else {
				rows := make([][]string, 0, len(res.Dropped))
				for _, m := range res.Dropped {
					rows = append(rows, []string{m.ID, m.RaftAddr, m.HTTPAddr, m.Suffrage})
				}
				title := "Would drop (none answers):"
				if res.Recovered {
					title = "Dropped:"
				}
				fmt.Fprintln(cmd.OutOrStdout(), title)
				if err := printTable(cmd.OutOrStdout(), []string{"ID", "RAFT ADDRESS", "HTTP ADDRESS", "SUFFRAGE"}, rows); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "-----> "+res.Message)
			}
			if !res.Recovered {
				return api.Invalidf("nothing changed: pass --confirm %s to recover", res.Member)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&confirm, "confirm", "", "the id of the member behind --socket: it becomes the cluster alone")
	return cmd
}

func joinCmd(g *globals) *cobra.Command {
	var token string
	cmd := &cobra.Command{
		Use:     "join PEER_HTTP_ADDR --token TOKEN",
		Short:   "Make the coordinator behind --socket join the cluster of the coordinator at PEER_HTTP_ADDR (with a token of: cacheplane members-token)",
		Example: "  CACHEPLANE_SOCKET=/run/cacheplane/c2.sock cacheplane join 10.0.0.1:7401 --token cpj1.…",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return api.Invalidf("join takes the peer API address (host:port) of any member of the cluster")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			msg, err := g.client().Join(ctx, args[0], token)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "-----> "+msg)
			return nil
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "member join token (cacheplane members-token on a member of the cluster)")
	return cmd
}

// tokenCmd is hosts-token (an agent's join token) or members-token (a new
// coordinator's).
func tokenCmd(g *globals, kind string) *cobra.Command {
	var ttl time.Duration
	use, short := "hosts-token [HOST] [--ttl 1h]", "Create a single-use join token for an agent (HOST: only that host id may use it)"
	if kind == api.TokenMember {
		use, short = "members-token [MEMBER_ID] [--ttl 1h]", "Create a single-use join token for a new coordinator (cacheplane join PEER --token TOKEN)"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			req := api.TokenRequest{Kind: kind, TTL: api.Duration(ttl)}
			if len(args) == 1 {
				req.Name = args[0]
			}
			out, err := g.client().Token(ctx, req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token may be used (once)")
	return cmd
}

func hostsRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "hosts-remove HOST",
		Short: "Forget a host with no members and revoke its agent's certificate",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return api.Invalidf("hosts-remove takes the host id (see: cacheplane hosts)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			msg, err := g.client().HostRemove(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "-----> "+msg)
			return nil
		},
	}
}

func clusterSecureCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cluster-secure",
		Short: "Give a cluster made before daemon identities its CA (then restart each coordinator and join each agent again)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			out, err := g.client().ClusterSecure(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "-----> "+out.Message)
			return nil
		},
	}
}

func leaveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "leave [MEMBER_ID]",
		Short: "Remove a coordinator from the cluster (default: the one behind --socket)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			c := g.client()
			id := ""
			if len(args) == 1 {
				id = args[0]
			} else {
				st, err := c.Cluster(ctx)
				if err != nil {
					return err
				}
				id = st.ServedBy
			}
			msg, err := c.RemoveMember(ctx, id)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "-----> "+msg)
			return nil
		},
	}
}

func drainCmd(g *globals, drain bool) *cobra.Command {
	use, short := "hosts-drain HOST", "Move every member off a host, one by one, without client errors"
	if !drain {
		use, short = "hosts-undrain HOST", "Make a drained host eligible for members again"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return api.Invalidf("%s takes the host id (see: cacheplane hosts)", strings.Fields(use)[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			msg, err := g.client().HostDrain(ctx, args[0], drain)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "-----> "+msg)
			return nil
		},
	}
}
