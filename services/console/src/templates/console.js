// priorfetch console: a confirm dialog before each action whose form asks for one. No other script.
document.addEventListener("submit", function (e) {
  var text = e.target.getAttribute("data-confirm");
  if (text && !window.confirm(text)) { e.preventDefault(); }
});
