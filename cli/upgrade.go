package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
)

func addonsUpgradeEngineCmd(g *globals) *cobra.Command {
	var (
		app        string
		mayDiscard bool
	)
	cmd := &cobra.Command{
		Use:   "addons-upgrade-engine --app APP ADDON_ID VERSION [--may-discard-data]",
		Short: "Move an addon to another engine version (redis-7.0.15 -> valkey-8.0.1, valkey-8.0.1 -> valkey-8.1.1, ...), one node at a time",
		Long: `Move an addon to another engine version of the catalog (see: cacheplane engines), following the
upgrade rules: never a downgrade, a major only from the latest minor of the current one, an engine
switch only where the new engine reads the old one's data (a refusal names the version to upgrade
to first).

A starter saves its data (BGSAVE), restarts once on the new version with the same data dir and is
checked to hold its keys again: a few seconds without service. A business addon upgrades rolling
when a replica on the new version syncs from a primary on the old one: the replica first, a
zero-loss switchover to it, the old primary, the sentinels and the haproxys one at a time, then
the primary moves back to its host; no command fails. Otherwise every redis node stops: the
replica is stopped (it cannot be promoted), the primary restarts on the new version, the replica
resyncs from it. Once done the app hook (if one is configured) is told.

Refused before anything changes: an unknown or identical version, one the rules refuse, an addon
busy with another operation or not running, and an upgrade that could lose data (the primary does
not answer, so SAVE cannot capture its latest writes) unless --may-discard-data.`,
		Example: "  cacheplane addons-upgrade-engine --app my-app my-app-1234 valkey-8.0.1",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return api.Invalidf("addons-upgrade-engine takes the addon id and the engine version: addons-upgrade-engine --app APP ADDON_ID VERSION (see addons --app APP and engines)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.EngineUpgradeRequest{App: app, To: args[1], MayDiscardData: mayDiscard}
			if err := req.Validate(); err != nil {
				return err
			}
			if err := api.ValidateMemberID("addon", args[0]); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			res, err := g.client().AddonEngineUpgrade(ctx, args[0], req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "-----> %s\n", res.Message)
			return nil
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	cmd.Flags().BoolVar(&mayDiscard, "may-discard-data", false, "upgrade even when writes since the last snapshot could be lost (the node does not answer)")
	return cmd
}
