// The replay page: asciinema-player on the session's cast, whose commands are markers.
// Changing speed or the idle cap re-creates the player at the same place.
const element = document.getElementById("player");
const speed = document.getElementById("replay-speed");
const idle = document.getElementById("replay-idle");
let player = null;

function create(startAt = 0, autoPlay = false) {
  if (player) player.dispose();
  player = window.AsciinemaPlayer.create(element.dataset.castUrl, element, {
    cols: Number(element.dataset.cols),
    rows: Number(element.dataset.rows),
    speed: Number(speed.value),
    idleTimeLimit: idle.value ? Number(idle.value) : undefined,
    startAt,
    autoPlay,
    preload: true,
    fit: "width",
  });
  window.replayPlayer = player; // for tests
  return player;
}

async function recreate() {
  const at = player ? await player.getCurrentTime() : 0;
  create(at, false);
}

speed.addEventListener("change", recreate);
idle.addEventListener("change", recreate);
for (const button of document.querySelectorAll("button.jump")) {
  button.addEventListener("click", async () => {
    await player.seek({ marker: Number(button.dataset.marker) });
    player.play();
  });
}

create();
if (element.dataset.startCommand !== "") {
  player.seek({ marker: Number(element.dataset.startCommand) });
}
