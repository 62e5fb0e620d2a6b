package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
)

func statsCmd(g *globals) *cobra.Command {
	var (
		app   string
		watch bool
		every time.Duration
	)
	cmd := &cobra.Command{
		Use:   "addons-stats --app APP [--watch]",
		Short: "Show the database dashboard: CPU, memory, swap and on-disk size per member, with the last hour",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := api.ValidateAppName(app); err != nil {
				return err
			}
			c := g.client()
			for {
				ctx, cancel := g.ctx(cmd)
				st, err := c.AddonStats(ctx, app)
				cancel()
				if err != nil {
					return err
				}
				if watch && !g.json {
					fmt.Fprint(cmd.OutOrStdout(), "\033[H\033[2J")
				}
				if g.json {
					err = printJSON(cmd.OutOrStdout(), st)
				} else {
					err = printStats(cmd.OutOrStdout(), st)
				}
				if err != nil || !watch {
					return err
				}
				t := time.NewTimer(every)
				select {
				case <-cmd.Context().Done():
					t.Stop()
					return nil
				case <-t.C:
				}
			}
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&every, "every", 2*time.Second, "refresh interval with --watch")
	return cmd
}

func printStats(w io.Writer, st api.AddonStats) error {
	fmt.Fprintf(w, "Addon %s (%s) of app %s\n", st.AddonID, st.Plan, st.App)
	rows := make([][]string, 0, len(st.Members))
	for _, m := range st.Members {
		row := []string{m.MemberID, string(m.Role), m.HostID, orDash(m.State)}
		if f := m.Latest; f != nil {
			row = append(row,
				fmt.Sprintf("%.1f%%", f.CPUPercent),
				bytes(f.MemoryBytes), bytes(f.MemoryHighestBytes), bytes(f.MemoryFreeBytes),
				bytes(f.SwapBytes), bytes(f.SwapHighestBytes), bytes(f.SwapFreeBytes),
				bytes(f.DiskBytes))
		} else {
			row = append(row, "-", "-", "-", "-", "-", "-", "-", "-")
		}
		mem := make([]float64, len(m.History))
		for i, p := range m.History {
			mem[i] = float64(p.MemoryBytes)
		}
		row = append(row, Sparkline(mem))
		rows = append(rows, row)
	}
	return printTable(w, []string{"MEMBER", "ROLE", "HOST", "STATE", "CPU", "MEM", "MEM MAX", "MEM FREE", "SWAP", "SWAP MAX", "SWAP FREE", "DISK", "MEM LAST HOUR"}, rows)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// bytes formats a byte count for people: 1.5 GB, 12.0 MB, 512 B.
func bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Sparkline draws values as one line of block characters scaled between
// their minimum and maximum.
func Sparkline(vs []float64) string {
	if len(vs) == 0 {
		return "-"
	}
	const ticks = "▁▂▃▄▅▆▇█"
	runes := []rune(ticks)
	lo, hi := vs[0], vs[0]
	for _, v := range vs {
		lo, hi = min(lo, v), max(hi, v)
	}
	var b strings.Builder
	for _, v := range vs {
		i := 0
		if hi > lo {
			i = int((v - lo) / (hi - lo) * float64(len(runes)-1))
		}
		b.WriteRune(runes[i])
	}
	return b.String()
}
