// django-celery-beat's periodic task form (templates/admin/djcelery/change_periodictask_form.html): says the
// chosen crontab in words under the field, as the package's inline script does, from a static file for the CSP.
(function () {
  const $ = django.jQuery;
  const readable = JSON.parse(document.getElementById("readable-crontabs").textContent);
  const help = $(".field-crontab .help");
  const original = help.html();
  $(".field-crontab_translation").hide();
  $(".field-crontab").change(function () {
    const words = readable[$("#id_crontab").val()];
    help.html(original);
    if (words) help.append("<br>", document.createTextNode("Translation: " + words));
  });
})();
