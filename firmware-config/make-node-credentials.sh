#!/bin/sh
# Create the site CA, the broker certificate, and per-node client
# certificates and broker passwords for SITLab Edge. Run it again to add
# nodes; files that exist are kept, so it never replaces a key in use.
set -eu

usage() {
    cat <<'USAGE'
Usage: make-node-credentials.sh [-d DIR] [-n SERVER_NAME]... [-D DAYS] USER...

Creates in DIR (default ./credentials), each only when missing:
  ca.key, ca.crt          site certificate authority (keep ca.key offline)
  server.key, server.crt  broker certificate for every -n SERVER_NAME
                          (default: localhost and 127.0.0.1)
  users/USER.key, .crt    client certificate with CN=USER
  users/USER.password     random broker password, mode 600
  passwd                  Mosquitto password file with an entry per USER

USER is a node id (lower-case letters, digits, '-' and '_'), or "gateway"
for the dispatching-centre consumer. The ACL gives a node write access only
below sitlab/v1/+/USER/, so the user name must equal the node id.

Options:
  -d DIR          output folder
  -n SERVER_NAME  DNS name or IP address the nodes use to reach the broker;
                  repeat for several names
  -D DAYS         validity of new certificates in days (default 825)
  -h              show this help

Passwords go to mosquitto_passwd on standard input, so they never appear
in a command line or in the output.
USAGE
}

dir=./credentials
days=825
names=""
while getopts "d:n:D:h" option; do
    case "$option" in
        d) dir=$OPTARG ;;
        n) names="$names $OPTARG" ;;
        D) days=$OPTARG ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
    echo "error: no USER given; name at least one node id or gateway" >&2
    usage >&2
    exit 2
fi
for tool in openssl mosquitto_passwd; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found; install openssl and mosquitto-clients" >&2
        exit 1
    fi
done
[ -n "$names" ] || names="localhost 127.0.0.1"

umask 077
mkdir -p "$dir/users"

if [ ! -f "$dir/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -days "$days" \
        -subj "/CN=SITLab site CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    echo "created site CA $dir/ca.crt"
fi

# sign NAME KEY CRT EXTENSIONS: issue a certificate for CN=NAME from the CA.
sign() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$2" -out "$2.csr" -subj "/CN=$1" 2>/dev/null
    printf '%s\n' "$4" > "$2.ext"
    openssl x509 -req -in "$2.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -out "$3" -days "$days" -extfile "$2.ext" 2>/dev/null
    rm -f "$2.csr" "$2.ext"
}

if [ ! -f "$dir/server.crt" ]; then
    san=""
    for name in $names; do
        case "$name" in
            *[!0-9.]*) entry="DNS:$name" ;;
            *) entry="IP:$name" ;;
        esac
        san="${san:+$san,}$entry"
    done
    first=$(echo $names | cut -d' ' -f1)
    sign "$first" "$dir/server.key" "$dir/server.crt" \
        "subjectAltName=$san
extendedKeyUsage=serverAuth"
    echo "created broker certificate $dir/server.crt for $san"
fi

touch "$dir/passwd"
for user in "$@"; do
    case "$user" in
        [a-z0-9]*) ;;
        *) echo "error: user '$user' must start with a lower-case letter or digit" >&2; exit 2 ;;
    esac
    case "$user" in
        *[!a-z0-9_-]*)
            echo "error: user '$user' may contain only a-z, 0-9, '-' and '_'" >&2
            exit 2 ;;
    esac
    key="$dir/users/$user.key"
    if [ ! -f "$dir/users/$user.crt" ]; then
        sign "$user" "$key" "$dir/users/$user.crt" "extendedKeyUsage=clientAuth"
        echo "created client certificate $dir/users/$user.crt"
    fi
    secret="$dir/users/$user.password"
    if [ ! -f "$secret" ]; then
        openssl rand -base64 24 > "$secret"
        echo "created password file $secret"
    fi
    if ! grep -q "^$user:" "$dir/passwd"; then
        password=$(head -n 1 "$secret")
        printf '%s\n%s\n' "$password" "$password" \
            | mosquitto_passwd "$dir/passwd" "$user" >/dev/null 2>&1
        echo "added $user to $dir/passwd"
    fi
done
