// Package netns builds test networks out of Linux network namespaces and
// carries packets between them over a userspace wire: a TUN device at each
// end and a program in between that applies a rate, a one-way delay, random
// loss and a cut, and counts TCP payload bytes. It exists because the
// kernel's netem qdisc (delay, loss) is not available everywhere tests run;
// both ends are real kernel TCP stacks, only the wire is a program.
//
// It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for setns) and /dev/net/tun.
// For tests only: nothing outside _test.go files may import it.
package netns
