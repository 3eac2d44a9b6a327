# codebox bash runner: set-up read by an interactive `bash --norc --noprofile
# --noediting -i` from its stdin (a pipe of the agent). Interactive, so that SIGINT
# aborts the running cell (loops included) and returns to the prompt with the shell's
# state intact. Each cell is one line on stdin,
#   __codebox_read && eval "$__codebox_code" </dev/null 3>&-
# (at top level, so `declare` stays global), whose code comes from the channel (fd 3, NUL-terminated fields); the prompt hook reports the cell's end and
# exit status on the channel as JSON lines. The cell runs with stdin from /dev/null and
# without fd 3.
set +o history +H +m
unset HISTFILE PROMPT_COMMAND MAILCHECK CODEBOX_RUNNER_FD CODEBOX_RUNNER_LANGUAGE CODEBOX_MAX_RESULT
export -n PS1
PS1='' PS2='' PS4='+ '
__codebox_seq=''
__codebox_restore=()
__codebox_read() {
  local kind seq pairs name value i
  IFS= read -r -d '' kind <&3 || exit 0
  IFS= read -r -d '' seq <&3 || exit 0
  IFS= read -r -d '' pairs <&3 || exit 0
  __codebox_restore=()
  for ((i = 0; i < pairs; i++)); do
    IFS= read -r -d '' name <&3 || exit 0
    IFS= read -r -d '' value <&3 || exit 0
    if [[ -v $name ]]; then
      __codebox_restore+=("$name" "set" "${!name}")
    else
      __codebox_restore+=("$name" "unset" "")
    fi
    export "$name=$value"
  done
  IFS= read -r -d '' __codebox_code <&3 || exit 0
  __codebox_seq=$seq
  printf '{"t":"start","seq":%s}\n' "$seq" >&3
}
__codebox_done() {
  local status=$? i
  [[ -z $__codebox_seq ]] && return
  for ((i = 0; i < ${#__codebox_restore[@]}; i += 3)); do
    if [[ ${__codebox_restore[i+1]} == set ]]; then
      export "${__codebox_restore[i]}=${__codebox_restore[i+2]}"
    else
      unset "${__codebox_restore[i]}"
    fi
  done
  __codebox_restore=()
  if ((status != 0)); then
    printf '{"t":"error","name":"ExitCode","value":"%d","traceback":""}\n' "$status" >&3
  fi
  printf '{"t":"done","seq":%s,"exit":%d}\n' "$__codebox_seq" "$status" >&3
  __codebox_seq=''
}
PROMPT_COMMAND=__codebox_done
printf '{"t":"ready"}\n' >&3
