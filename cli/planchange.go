package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
)

func addonsUpgradeCmd(g *globals) *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   "addons-upgrade --app APP ADDON_ID PLAN",
		Short: "Move an addon to another plan of its kind, live: the redis nodes are resized in place, no restart",
		Long: `Move an addon to another plan of the same kind (starter -> starter, business -> business).
The redis nodes are resized in place (memory limit and maxmemory), nothing restarts and
the URL stays the same; once every node runs with the new size the app hook (if one is
configured) is told. Refused before anything changes: an unknown or identical plan, a
change of kind (starter <-> business: not supported yet), an addon that is busy with
another operation or not running, a plan smaller than the data stored now plus 10 %,
a host without room for the larger size.`,
		Example: "  cacheplane addons-upgrade --app my-app my-app-1234 redis-starter-1024",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return api.Invalidf("addons-upgrade takes the addon id and the new plan: addons-upgrade --app APP ADDON_ID PLAN (see addons --app APP and addons-plans)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.PlanChangeRequest{App: app, Plan: args[1]}
			if err := req.Validate(); err != nil {
				return err
			}
			if err := api.ValidateMemberID("addon", args[0]); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			res, err := g.client().AddonPlanChange(ctx, args[0], req)
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
	return cmd
}
