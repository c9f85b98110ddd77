// Draws the analytics charts from their data-figure attributes, again after each HTMX swap, and
// keeps the filter form consistent: editing a date switches the range to custom, and without a tz
// in the URL the browser's time zone is used.
(() => {
  const config = { displaylogo: false, responsive: true };

  function drawCharts(root) {
    if (!window.Plotly) return;
    root.querySelectorAll("[data-figure]").forEach((element) => {
      const figure = JSON.parse(element.dataset.figure);
      window.Plotly.react(element, figure.data, figure.layout, config);
    });
  }

  function setUpFilters() {
    const form = document.getElementById("analytics-filters");
    if (!form) return;
    const range = document.getElementById("range-select");
    form.querySelectorAll("input[type=date]").forEach((input) =>
      input.addEventListener("change", () => {
        range.value = "custom";
      }),
    );
    const tzInput = document.getElementById("tz-input");
    const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (form.dataset.browserTz === "on" && browserZone && tzInput.value !== browserZone) {
      tzInput.value = browserZone;
      tzInput.dispatchEvent(new Event("change", { bubbles: true }));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    drawCharts(document);
    setUpFilters();
  });
  document.addEventListener("htmx:afterSwap", (event) => drawCharts(event.detail.target));
})();
