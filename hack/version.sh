#!/bin/sh
# Prints the version for builds and packages. With a release tag vX.Y.Z:
# X.Y.Z, or X.Y.Z+N.gHASH for N commits after it. Without one:
# 0.0.0+N.gHASH (N commits in all). "-dirty" becomes ".dirty". Both Debian
# and RPM sort these sensibly and they start with a digit, as both require.
set -e
d=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null) || d=""
if [ -n "$d" ]; then
	echo "$d" | sed -e 's/^v//' -e 's/-\([0-9]*\)-g\([0-9a-f]*\)/+\1.g\2/' -e 's/-dirty$/.dirty/'
	exit 0
fi
if ! n=$(git rev-list --count HEAD 2>/dev/null); then
	echo 0.0.0+unknown
	exit 0
fi
h=$(git rev-parse --short HEAD)
v="0.0.0+$n.g$h"
git diff --quiet HEAD 2>/dev/null || v="$v.dirty"
echo "$v"
