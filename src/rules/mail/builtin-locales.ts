// The words of the built-in mails, per locale. templates.ts lays them out into
// templates (text and HTML) in the template language; `{{org_name}}` and
// `{{lifespan}}` are its variables. Adding a locale is adding an entry here
// (test/mail-templates.test.ts renders every kind in every locale).
import type { MailKind } from "./kinds.ts";

export interface LocalePhrases {
  /** Per kind: the subject, the first paragraph, and the closing one. */
  kinds: Record<MailKind, { subject: string; lead: string; after: string }>;
  /** After the code: how long it lives. */
  validity: string;
  /** Before the link, in the text part. */
  linkLead: string;
  /** The link's words in the HTML part, per purpose. */
  action: Record<"login" | "registration" | "recovery", string>;
}

export const builtinPhrases: Readonly<Record<string, LocalePhrases>> = {
  en: {
    kinds: {
      login: {
        subject: "Your {{org_name}} login code",
        lead: "Use this code to log in:",
        after: "If you did not try to log in, you can ignore this mail.",
      },
      registration: {
        subject: "Complete your {{org_name}} registration",
        lead: "Use this code to complete your registration:",
        after: "If you did not sign up, you can ignore this mail.",
      },
      recovery: {
        subject: "Your {{org_name}} account recovery code",
        lead: "Use this code to recover your account:",
        after: "If you did not ask to recover your account, you can ignore this mail; your account is unchanged.",
      },
      already_registered: {
        subject: "You already have a {{org_name}} account",
        lead: "Someone, probably you, tried to sign up with this address, but it already has an account.",
        after: "You can log in as usual. If this was not you, you can ignore this mail.",
      },
      unknown_recovery: {
        subject: "{{org_name}} account access attempted",
        lead: "Someone, probably you, tried to recover an account with this address, but there is no account for it.",
        after: "If this was not you, you can ignore this mail.",
      },
    },
    validity: "It is valid for {{lifespan}} and works once.",
    linkLead: "Or open this link instead of typing the code:",
    action: { login: "Log in", registration: "Complete registration", recovery: "Recover your account" },
  },
  de: {
    kinds: {
      login: {
        subject: "Ihr Anmeldecode für {{org_name}}",
        lead: "Verwenden Sie diesen Code, um sich anzumelden:",
        after: "Wenn Sie nicht versucht haben, sich anzumelden, können Sie diese E-Mail ignorieren.",
      },
      registration: {
        subject: "Schließen Sie Ihre Registrierung bei {{org_name}} ab",
        lead: "Verwenden Sie diesen Code, um Ihre Registrierung abzuschließen:",
        after: "Wenn Sie sich nicht registriert haben, können Sie diese E-Mail ignorieren.",
      },
      recovery: {
        subject: "Ihr Wiederherstellungscode für {{org_name}}",
        lead: "Verwenden Sie diesen Code, um Ihr Konto wiederherzustellen:",
        after: "Wenn Sie die Wiederherstellung Ihres Kontos nicht angefordert haben, können Sie diese E-Mail ignorieren; Ihr Konto bleibt unverändert.",
      },
      already_registered: {
        subject: "Sie haben bereits ein Konto bei {{org_name}}",
        lead: "Jemand, wahrscheinlich Sie, wollte sich mit dieser Adresse registrieren, aber für sie besteht bereits ein Konto.",
        after: "Sie können sich wie gewohnt anmelden. Wenn Sie das nicht waren, können Sie diese E-Mail ignorieren.",
      },
      unknown_recovery: {
        subject: "Versuchter Zugriff auf ein Konto bei {{org_name}}",
        lead: "Jemand, wahrscheinlich Sie, wollte ein Konto mit dieser Adresse wiederherstellen, aber für sie gibt es kein Konto.",
        after: "Wenn Sie das nicht waren, können Sie diese E-Mail ignorieren.",
      },
    },
    validity: "Er ist {{lifespan}} lang gültig und funktioniert nur einmal.",
    linkLead: "Oder öffnen Sie diesen Link, statt den Code einzugeben:",
    action: { login: "Anmelden", registration: "Registrierung abschließen", recovery: "Konto wiederherstellen" },
  },
  fr: {
    kinds: {
      login: {
        subject: "Votre code de connexion {{org_name}}",
        lead: "Utilisez ce code pour vous connecter\u00a0:",
        after: "Si vous n’avez pas essayé de vous connecter, vous pouvez ignorer ce message.",
      },
      registration: {
        subject: "Finalisez votre inscription à {{org_name}}",
        lead: "Utilisez ce code pour finaliser votre inscription\u00a0:",
        after: "Si vous ne vous êtes pas inscrit, vous pouvez ignorer ce message.",
      },
      recovery: {
        subject: "Votre code de récupération de compte {{org_name}}",
        lead: "Utilisez ce code pour récupérer votre compte\u00a0:",
        after: "Si vous n’avez pas demandé à récupérer votre compte, vous pouvez ignorer ce message\u00a0; votre compte n’a pas été modifié.",
      },
      already_registered: {
        subject: "Vous avez déjà un compte {{org_name}}",
        lead: "Quelqu’un, probablement vous, a essayé de s’inscrire avec cette adresse, mais elle a déjà un compte.",
        after: "Vous pouvez vous connecter comme d’habitude. Si ce n’était pas vous, vous pouvez ignorer ce message.",
      },
      unknown_recovery: {
        subject: "Tentative d’accès à un compte {{org_name}}",
        lead: "Quelqu’un, probablement vous, a essayé de récupérer un compte avec cette adresse, mais aucun compte n’y est associé.",
        after: "Si ce n’était pas vous, vous pouvez ignorer ce message.",
      },
    },
    validity: "Il est valable {{lifespan}} et ne fonctionne qu’une fois.",
    linkLead: "Ou ouvrez ce lien au lieu de saisir le code\u00a0:",
    action: { login: "Se connecter", registration: "Finaliser l’inscription", recovery: "Récupérer le compte" },
  },
  es: {
    kinds: {
      login: {
        subject: "Tu código de inicio de sesión de {{org_name}}",
        lead: "Usa este código para iniciar sesión:",
        after: "Si no intentaste iniciar sesión, puedes ignorar este correo.",
      },
      registration: {
        subject: "Completa tu registro en {{org_name}}",
        lead: "Usa este código para completar tu registro:",
        after: "Si no te registraste, puedes ignorar este correo.",
      },
      recovery: {
        subject: "Tu código de recuperación de cuenta de {{org_name}}",
        lead: "Usa este código para recuperar tu cuenta:",
        after: "Si no pediste recuperar tu cuenta, puedes ignorar este correo; tu cuenta no ha cambiado.",
      },
      already_registered: {
        subject: "Ya tienes una cuenta en {{org_name}}",
        lead: "Alguien, probablemente tú, intentó registrarse con esta dirección, pero ya tiene una cuenta.",
        after: "Puedes iniciar sesión como siempre. Si no fuiste tú, puedes ignorar este correo.",
      },
      unknown_recovery: {
        subject: "Intento de acceso a una cuenta de {{org_name}}",
        lead: "Alguien, probablemente tú, intentó recuperar una cuenta con esta dirección, pero no hay ninguna cuenta asociada.",
        after: "Si no fuiste tú, puedes ignorar este correo.",
      },
    },
    validity: "Es válido durante {{lifespan}} y solo funciona una vez.",
    linkLead: "O abre este enlace en lugar de escribir el código:",
    action: { login: "Iniciar sesión", registration: "Completar el registro", recovery: "Recuperar la cuenta" },
  },
};
