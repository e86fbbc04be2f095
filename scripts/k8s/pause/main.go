// Command pause is the sandbox ("pause") container of the test cluster's pods (scripts/k8s/cluster.sh):
// it holds the pod's namespaces open, reaps the orphans it inherits when it is PID 1 of a shared PID
// namespace, and exits 0 on SIGTERM or SIGINT. Built static (CGO_ENABLED=0) into an image FROM scratch.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// One SIGCHLD may stand for several exited children: reap until none is left.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
