// Package reliability holds ehrport's fault-injection tests (issue #8,
// docs/RELIABILITY.md): real S3 servers killed with SIGKILL and restarted
// mid-export and mid-migration, a network that resets, stalls and cuts
// responses short, SIGINT and SIGTERM part-way through, a disk that fills
// up, read-only and unreadable folders, a lying cloud and tampering at
// rest. It has no code of its own: the tests (build tag integration) run
// the real command line, as a child process, against private servers
// (internal/testserver) and a fault proxy (internal/faultproxy), and each
// writes its counts to the file named by EHRPORT_RELIABILITY_OUT, from
// which `make reliability` regenerates the table.
package reliability
