// Package backup owns the backup policy of cacheplane as pure functions:
// what a backup is called, when the daily backup of an addon is due, and
// which backups retention keeps.
//
// It is logic only, like package scheduler and package
// coordinator/operation: no I/O, no goroutines, no global rand, no
// time.Now — the clock is always a parameter. The coordinator's leader calls
// Due and Retain on a timer and turns their answers into Raft commands and
// backup operations; the agent's dump pipeline (package agent/backup) and the
// stores (package backupstore) use the names made here. Nothing here talks
// to a store, an agent or Redis.
//
// # Names
//
// A periodic backup is named after its addon and the calendar day it is for
// (PeriodicID: my-app-3030-20261207), so a retry or a new leader adopts the
// record of that day instead of making a second one. A manual backup is
// named after its addon and the second it was asked for (ManualID:
// my-app-3030-m20261207T101500Z, UTC). StoreKey is <addon id>/<id>.tar.gz.age
// and DownloadName <YYYYMMDDhhmmss>_<app>_<n>.tar.gz, with CreatedAt in UTC
// and n the backup's Seq.
//
// # Schedule
//
// Schedule is a cron spec read with robfig/cron/v3's standard parser in a
// time zone ("CRON_TZ=Europe/Paris 0 1 * * *" by default) that fires at
// most once per calendar day, a window over which the addons' start times
// are spread (each addon gets a fixed offset in [0, Window) from a hash of
// its id, so a fleet does not fork every redis at once), a bound on the
// dumps running at a time on one host, and a retry interval. Validate
// refuses, with the reason, a spec that fires more than once a day or
// never, a time of day that a DST change skips (cron would skip that day's
// backup: 02:30 in Paris on the last Sunday of March), and a window that
// runs past midnight. The zone database is embedded (time/tzdata), so the
// schedule does not depend on the host's zoneinfo.
//
// Due answers, at now, which periodic backups to start and which addons
// wait (and why). The backup of day D (the day of the latest run at or
// before now, see Schedule.Day) is due from its StartAt until the end of
// D in the schedule's time zone: a day whose runs were all missed (the
// leader was down all morning, the addon was busy, the dump failed) is
// still taken later that same day, but a missed day is never taken the next
// day — the next day has its own backup. An existing record of the day is
// adopted: done or running, nothing starts (a new leader does not start a
// second one); error, it is retried under the same ID once its NextAttempt
// has passed (Schedule.Failed sets it RetryEvery after the failure).
//
// # Retention
//
// Retain decides, per addon, with calendar days counted in the schedule's
// time zone (Europe/Paris):
//
//   - pinned backups (manual ones an operator pinned) and running ones are
//     kept;
//   - failed backups are kept 7 days, then deleted;
//   - every other backup of the last 30 days is kept (age 0–30 calendar
//     days, or less than 30×24 h old across a DST change);
//   - days 31–90: the newest good backup of each ISO week among the
//     backups of that age;
//   - days 91–180: the newest good backup of each calendar month among the
//     backups of that age;
//   - nothing older than 180 days;
//   - whatever the above says, the addon's newest good backup is kept.
//
// Manual backups follow the same rules unless pinned. A backup is good when
// it is done, not refused by the restore drill and not deleted
// (api.Backup.Good). The leader applies Retain daily to the backups that
// survived the day before, so a week or a month keeps the newest of its
// backups that were still there when it entered the range; records of
// deleted backups stay api.DeletedBackupKept (Forget says when they go).
package backup
