package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
)

func enginesCmd(g *globals) *cobra.Command {
	var from string
	var all bool
	cmd := &cobra.Command{
		Use:   "engines [--all] [--from VERSION]",
		Short: "List the engine versions and the upgrades allowed between them",
		Long: `List the engine catalog: each version (engine-version, e.g. redis-7.0.15), its
images and the versions an addon on it may be upgraded to, and whether that
upgrade rolls one node at a time (a replica on the new version syncs from a
primary on the old one).

--all lists every pair of versions with the reason it is allowed or refused
(a refusal names the version to upgrade to first); --from lists them for one
version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cat, err := g.client().EnginePaths(ctx)
			if err != nil {
				return err
			}
			if from != "" {
				found := false
				for _, e := range cat.Engines {
					found = found || e.Key() == from
				}
				if !found {
					keys := make([]string, len(cat.Engines))
					for i, e := range cat.Engines {
						keys[i] = e.Key()
					}
					return api.Invalidf("unknown engine version %q; the catalog has %s", from, strings.Join(keys, ", "))
				}
				var paths []api.EnginePath
				for _, p := range cat.Paths {
					if p.From == from {
						paths = append(paths, p)
					}
				}
				cat.Paths = paths
				all = true
			}
			if g.json {
				if cat.Paths == nil {
					cat.Paths = []api.EnginePath{}
				}
				return printJSON(cmd.OutOrStdout(), cat)
			}
			if all {
				return printPaths(cmd.OutOrStdout(), cat.Paths)
			}
			return printEngines(cmd.OutOrStdout(), cat)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "list every pair of versions with the reason")
	cmd.Flags().StringVar(&from, "from", "", "list every upgrade from this version (e.g. redis-7.0.15) with the reason")
	return cmd
}

// printEngines prints one row per version with its allowed upgrades.
func printEngines(w io.Writer, cat api.EngineCatalog) error {
	if len(cat.Engines) == 0 {
		fmt.Fprintln(w, "The engine catalog is empty: no coordinator has led yet.")
		return nil
	}
	rows := make([][]string, 0, len(cat.Engines))
	for _, e := range cat.Engines {
		var to []string
		for _, p := range cat.Paths {
			if p.From == e.Key() && p.Allowed {
				to = append(to, upgradeLabel(p))
			}
		}
		upgrades := "-"
		if len(to) > 0 {
			upgrades = strings.Join(to, ", ")
		}
		rdb := "-"
		if e.RDB > 0 {
			rdb = fmt.Sprint(e.RDB)
		}
		rows = append(rows, []string{string(e.Engine), e.Version, yesNo(e.Default), rdb, images(e), upgrades})
	}
	return printTable(w, []string{"ENGINE", "VERSION", "DEFAULT", "RDB", "IMAGES", "UPGRADES TO"}, rows)
}

// upgradeLabel is "redis-8.0.2 (major, rolling)".
func upgradeLabel(p api.EnginePath) string {
	how := "all nodes stop"
	if p.Rolling {
		how = "rolling"
	}
	if p.Kind == "" {
		return fmt.Sprintf("%s (%s)", p.To, how)
	}
	return fmt.Sprintf("%s (%s, %s)", p.To, p.Kind, how)
}

// images is the redis role's image, and the sentinel's when it differs.
func images(e api.EngineVersion) string {
	s := e.Images[api.RoleRedis]
	if sen := e.Images[api.RoleSentinel]; sen != "" && sen != s {
		s += ", sentinel " + sen
	}
	return s
}

// printPaths prints every path with its decision and reason.
func printPaths(w io.Writer, paths []api.EnginePath) error {
	if len(paths) == 0 {
		fmt.Fprintln(w, "No upgrade path: the catalog has fewer than two versions.")
		return nil
	}
	rows := make([][]string, 0, len(paths))
	for _, p := range paths {
		allowed, rolling := "no", "-"
		if p.Allowed {
			allowed, rolling = "yes", yesNo(p.Rolling)
		}
		next := p.Next
		if next == "" {
			next = "-"
		}
		rows = append(rows, []string{p.From, p.To, allowed, rolling, next, p.Reason})
	}
	return printTable(w, []string{"FROM", "TO", "ALLOWED", "ROLLING", "FIRST UPGRADE TO", "REASON"}, rows)
}
