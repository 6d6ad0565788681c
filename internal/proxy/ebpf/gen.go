package ebpf

// The objects are committed: building the daemon needs no clang. make
// generate (hack/deps.sh installs clang-14 and libbpf-dev) rebuilds them.
//go:generate go tool -modfile=../../../hack/tools/go.mod bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type svc4_key -type svc6_key -type svc_value -type backend4 -type backend6 -type config -type sock_xlate -type aff_key -type aff_value sock bpf/sock.c
//go:generate go tool -modfile=../../../hack/tools/go.mod bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type xlate4 -type xlate6 destroy bpf/destroy.c
